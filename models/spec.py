"""Framework-neutral model spec: frozen dataclasses loaded from TOML and validated once."""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class SpecError(ValueError):
    """An invalid model spec; the message names the layer, the field and the reason."""


@dataclass(frozen=True)
class Conv2D:
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    type: str = field(default="conv2d", init=False)


@dataclass(frozen=True)
class ReLU:
    type: str = field(default="relu", init=False)


@dataclass(frozen=True)
class MaxPool2D:
    size: int
    stride: int | None = None  # None means "same as size"
    type: str = field(default="maxpool2d", init=False)

    @property
    def step(self) -> int:
        return self.size if self.stride is None else self.stride


@dataclass(frozen=True)
class Flatten:
    type: str = field(default="flatten", init=False)


@dataclass(frozen=True)
class Dense:
    units: int
    type: str = field(default="dense", init=False)


Layer = Conv2D | ReLU | MaxPool2D | Flatten | Dense
LAYER_TYPES: dict[str, type] = {
    "conv2d": Conv2D, "relu": ReLU, "maxpool2d": MaxPool2D, "flatten": Flatten, "dense": Dense,
}
# Fields each type accepts, with whether they are required.
FIELDS: dict[str, dict[str, bool]] = {
    "conv2d": {"out_channels": True, "kernel_size": True, "stride": False, "padding": False},
    "relu": {},
    "maxpool2d": {"size": True, "stride": False},
    "flatten": {},
    "dense": {"units": True},
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: tuple[int, ...]  # (C, H, W)
    classes: int
    layers: tuple[Layer, ...]
    shapes: tuple[tuple[int, ...], ...]  # output shape of each layer, batch dimension left out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names and shapes, in layer order."""
        out: dict[str, tuple[int, ...]] = {}
        prev = self.input
        for i, (layer, shape) in enumerate(zip(self.layers, self.shapes)):
            if isinstance(layer, Conv2D):
                out[f"{i}.weight"] = (layer.out_channels, prev[0], layer.kernel_size, layer.kernel_size)
                out[f"{i}.bias"] = (layer.out_channels,)
            elif isinstance(layer, Dense):
                out[f"{i}.weight"] = (prev[0], layer.units)
                out[f"{i}.bias"] = (layer.units,)
            prev = shape
        return out

    def param_count(self) -> int:
        total = 0
        for shape in self.param_shapes().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def input_of(self, i: int) -> tuple[int, ...]:
        """Shape that layer i receives."""
        return self.input if i == 0 else self.shapes[i - 1]


def _int(where: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: field '{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where}: field '{name}' must be >= {minimum}, got {value}")
    return value


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _infer(where: str, layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape of one layer, or a SpecError saying why the input does not fit."""
    if isinstance(layer, Conv2D | MaxPool2D):
        kind, k = ("kernel_size", layer.kernel_size) if isinstance(layer, Conv2D) else ("size", layer.size)
        if len(shape) != 3:
            raise SpecError(f"{where}: field 'type' {layer.type} needs a (C, H, W) input, got {shape}; "
                            "put it before the flatten")
        pad = layer.padding if isinstance(layer, Conv2D) else 0
        stride = layer.stride if isinstance(layer, Conv2D) else layer.step
        c, h, w = shape
        if k > min(h, w) + 2 * pad:
            raise SpecError(f"{where}: field '{kind}' {k} is larger than its (padded) input "
                            f"{h + 2 * pad}x{w + 2 * pad}")
        out_c = layer.out_channels if isinstance(layer, Conv2D) else c
        return (out_c, _out_size(h, k, stride, pad), _out_size(w, k, stride, pad))
    if isinstance(layer, Flatten):
        n = 1
        for d in shape:
            n *= d
        return (n,)
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise SpecError(f"{where}: field 'type' dense gets a {len(shape)}-D input {shape}; "
                            "add a flatten layer before it")
        return (layer.units,)
    return shape  # relu


def _layer(i: int, table) -> Layer:
    where = f"layer {i}"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: must be a table, got {table!r}")
    kind = table.get("type")
    if kind not in LAYER_TYPES:
        raise SpecError(f"{where}: field 'type' is {kind!r}; choose one of {', '.join(LAYER_TYPES)}")
    where = f"layer {i} ({kind})"
    allowed = FIELDS[kind]
    for name in table:
        if name != "type" and name not in allowed:
            known = ", ".join(allowed) or "none"
            raise SpecError(f"{where}: unknown field '{name}'; allowed fields: {known}")
    kwargs = {}
    for name, required in allowed.items():
        if name not in table:
            if required:
                raise SpecError(f"{where}: missing required field '{name}'")
            continue
        kwargs[name] = _int(where, name, table[name], 0 if name == "padding" else 1)
    return LAYER_TYPES[kind](**kwargs)


def parse(data: dict, source: str = "<spec>") -> ModelSpec:
    """Validate a decoded TOML table and build the spec."""
    try:
        return _parse(data)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def _parse(data: dict) -> ModelSpec:
    top = {"name", "input", "classes", "layers"}
    for key in data:
        if key not in top:
            raise SpecError(f"unknown top-level field '{key}'; allowed: {', '.join(sorted(top))}")
    for key in top:
        if key not in data:
            raise SpecError(f"missing top-level field '{key}'")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise SpecError(f"field 'name' must be a non-empty string, got {name!r}")
    inp = data["input"]
    if not isinstance(inp, list) or len(inp) != 3:
        raise SpecError(f"field 'input' must be [C, H, W], got {inp!r}")
    inp = tuple(_int("input", "input", v, 1) for v in inp)
    classes = _int("top level", "classes", data["classes"], 1)
    tables = data["layers"]
    if not isinstance(tables, list) or not tables:
        raise SpecError("field 'layers' must be a non-empty array of [[layers]] tables")
    layers = tuple(_layer(i, t) for i, t in enumerate(tables))
    shapes, shape = [], inp
    for i, layer in enumerate(layers):
        shape = _infer(f"layer {i} ({layer.type})", layer, shape)
        if any(d < 1 for d in shape):
            raise SpecError(f"layer {i} ({layer.type}): output shape {shape} is empty")
        shapes.append(shape)
    dense = [i for i, layer in enumerate(layers) if isinstance(layer, Dense)]
    if not dense:
        raise SpecError("the spec has no dense layer; the last dense layer must have 'classes' units")
    last = dense[-1]
    if layers[last].units != classes:
        raise SpecError(f"layer {last} (dense): field 'units' is {layers[last].units} but 'classes' is {classes}; "
                        "the last dense layer must output one unit per class")
    if shape != (classes,):
        raise SpecError(f"the model outputs shape {shape}; it must end in ({classes},) logits")
    return ModelSpec(name=name, input=inp, classes=classes, layers=layers, shapes=tuple(shapes))


# Shipped specs are under 1 KiB; the cap stops a device or a wrong path from being read without end.
MAX_SPEC_BYTES = 2**20
EXPECTED = "expected a TOML spec file"


def load(path: str | Path) -> ModelSpec:
    """Load and validate a spec from a TOML file."""
    path = Path(path)
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); {EXPECTED}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse(data, str(path))


def _read(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES of a regular file, or a SpecError saying what the path is instead."""
    try:
        # Non-blocking, so a FIFO with no writer is refused below instead of hanging the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory; {EXPECTED}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot open it ({e.strerror}); {EXPECTED}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"{path}: is a directory; {EXPECTED}")
        if not stat.S_ISREG(mode):
            raise SpecError(f"{path}: is not a regular file (it is {_kind(mode)}); {EXPECTED}")
        raw = _read_fd(fd, MAX_SPEC_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 2**20} MiB; {EXPECTED} (a spec is a few lines)")
    return raw


def _read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes, stopping at the end of the file."""
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "neither a file nor a directory"

"""Framework-neutral model spec: layers as frozen dataclasses, parsed from a decoded TOML table and validated once."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

Shape = tuple[int, ...]


class SpecError(ValueError):
    """An invalid model spec; the message names the layer, the field and the reason."""


class Layer:
    """One layer of a spec: its TOML fields, and what follows from them given the shape it receives."""

    type: str  # the TOML name; each subclass makes it a field with init=False, so repr and asdict show it

    def output_shape(self, shape: Shape) -> Shape:
        """The output shape for an input of this shape (batch left out), or a SpecError saying why it does not fit."""
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        """Parameter shapes by canonical suffix ("weight", "bias") for an input of this shape."""
        return {}

    def buffer_shapes(self, shape: Shape) -> dict[str, Shape]:
        """State that training updates but no gradient reaches (batch norm's running statistics), by suffix."""
        return {}

    def initial_params(self, shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Float64 starting values by suffix: PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight first."""
        # kaiming_uniform_(a=sqrt(5)), as torch.nn.Conv2d and Linear use, reduces to this bound for both tensors.
        shapes = self.param_shapes(shape)
        if not shapes:
            return {}
        bound = 1.0 / math.sqrt(fan_in(shapes["weight"]))
        return {suffix: rng.uniform(-bound, bound, size=s) for suffix, s in shapes.items()}

    def initial_buffers(self, shape: Shape) -> dict[str, np.ndarray]:
        """Float64 starting values of the buffers, by suffix."""
        return {}

    def describe(self) -> str:
        """Short text for the layer, e.g. conv2d(32, k3, s1, p0)."""
        return self.type

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        """Scalar operations for one sample's forward pass, as the micrograd backend builds them."""
        return 0


# Every layer class, by its TOML name, in the order error messages list them.
LAYER_TYPES: dict[str, type[Layer]] = {}
# Fields each type accepts, with whether they are required: derived from the dataclass (required = no default).
FIELDS: dict[str, dict[str, bool]] = {}
LayerClass = TypeVar("LayerClass", bound=type[Layer])


def register(cls: LayerClass) -> LayerClass:
    """Class decorator, over @dataclass: the spec accepts the layer under its TOML name, with its init fields."""
    LAYER_TYPES[cls.type] = cls
    FIELDS[cls.type] = {f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                        for f in dataclasses.fields(cls) if f.init}
    return cls


def fan_in(shape: Shape) -> int:
    """Inputs feeding one output unit of a conv (out, in, kh, kw) or dense (in, out) weight."""
    return shape[1] * shape[2] * shape[3] if len(shape) == 4 else shape[0]


def _reader(cls: type[Layer], name: str) -> Callable[[str, str, Any], Any]:
    """How a field's TOML value is checked: its metadata's "read", else an integer of at least 1."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return meta.get("read", lambda where, name, value: _int(where, name, value, 1))


def _padding(where: str, name: str, value) -> int | str:
    """conv2d's padding: an integer >= 0, "valid" (read as 0) or "same"."""
    if value == "valid":
        return 0
    if value == "same":
        return value
    if isinstance(value, str):
        raise SpecError(f"{where}: field '{name}' is {value!r}; use an integer >= 0, \"valid\" or \"same\"")
    return _int(where, name, value, 0)


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable:
    """A reader of a finite number between low and high, each end included unless it is open."""
    def read(where: str, name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpecError(f"{where}: field '{name}' must be a number, got {value!r}")
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise SpecError(f"{where}: field '{name}' must be in {span}, got {value!r}")
        return float(value)
    return read


@register
@dataclass(frozen=True)
class Conv2D(Layer):
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int | str = field(default=0, metadata={"read": _padding})  # an integer, or "same"
    type: str = field(default="conv2d", init=False)

    def pads(self, shape: Shape) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding for a (C, H, W) input; "same" puts the odd pixel at the end."""
        if self.padding != "same":
            return (self.padding,) * 4
        # The TensorFlow/JAX rule: output ceil(n / s), total padding max((out - 1) s + k - n, 0), less of it first.
        (top, bottom), (left, right) = (_same(n, self.kernel_size, self.stride) for n in shape[1:3])
        return top, bottom, left, right

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) == 3 and self.padding == "same":
            return (self.out_channels, -(-shape[1] // self.stride), -(-shape[2] // self.stride))
        return _window(self.type, "kernel_size", self.kernel_size, self.stride, self.padding, shape,
                       self.out_channels)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"weight": (self.out_channels, shape[0], self.kernel_size, self.kernel_size),
                "bias": (self.out_channels,)}

    def describe(self) -> str:
        pad = "same" if self.padding == "same" else f"p{self.padding}"
        return f"conv2d({self.out_channels}, k{self.kernel_size}, s{self.stride}, {pad})"

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * shape[0] * self.kernel_size ** 2  # one multiply-add per weight per output


@register
@dataclass(frozen=True)
class ReLU(Layer):
    type: str = field(default="relu", init=False)

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out)


@dataclass(frozen=True)
class Pool2D(Layer):
    """What max and average pooling share: size x size VALID windows, `step` apart."""
    size: int
    stride: int | None = None  # None means "same as size"

    @property
    def step(self) -> int:
        return self.size if self.stride is None else self.stride

    def output_shape(self, shape: Shape) -> Shape:
        return _window(self.type, "size", self.size, self.step, 0, shape)

    def describe(self) -> str:
        return f"{self.type}({self.size}, s{self.step})"


@register
@dataclass(frozen=True)
class MaxPool2D(Pool2D):
    type: str = field(default="maxpool2d", init=False)

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * self.size ** 2  # one comparison per window element


@register
@dataclass(frozen=True)
class Flatten(Layer):
    type: str = field(default="flatten", init=False)

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


@register
@dataclass(frozen=True)
class Dense(Layer):
    units: int
    type: str = field(default="dense", init=False)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise SpecError(f"field 'type' dense gets a {len(shape)}-D input {shape}; add a flatten layer before it")
        return (self.units,)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"weight": (shape[0], self.units), "bias": (self.units,)}

    def describe(self) -> str:
        return f"dense({self.units})"

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return shape[0] * self.units


@register
@dataclass(frozen=True)
class Tanh(Layer):
    type: str = field(default="tanh", init=False)

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out)


@register
@dataclass(frozen=True)
class Sigmoid(Layer):
    type: str = field(default="sigmoid", init=False)

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out)


@register
@dataclass(frozen=True)
class AvgPool2D(Pool2D):
    type: str = field(default="avgpool2d", init=False)

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * (self.size ** 2 + 1)  # the window's additions and one scaling


@register
@dataclass(frozen=True)
class BatchNorm(Layer):
    """Per channel of a (C, H, W) input, per feature of an (F,) one; momentum in PyTorch's sense."""
    eps: float = field(default=1e-5, metadata={"read": _number(0, math.inf, low_open=True, high_open=True)})
    # running = (1 - momentum) * running + momentum * batch statistic
    momentum: float = field(default=0.1, metadata={"read": _number(0, 1)})
    type: str = field(default="batchnorm", init=False)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise SpecError(f"field 'type' batchnorm needs a (C, H, W) or (F,) input, got {shape}")
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"weight": (shape[0],), "bias": (shape[0],)}

    def buffer_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"running_mean": (shape[0],), "running_var": (shape[0],)}

    def initial_params(self, shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"weight": np.ones(shape[0]), "bias": np.zeros(shape[0])}

    def initial_buffers(self, shape: Shape) -> dict[str, np.ndarray]:
        return {"running_mean": np.zeros(shape[0]), "running_var": np.ones(shape[0])}

    def describe(self) -> str:
        return f"batchnorm(eps {self.eps:g}, m {self.momentum:g})"

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        # In training, as micrograd builds it: 4 per value for the output (centre, scale by 1/std, by gamma, add
        # beta) and 3 for the batch statistics (a sum, a square, its sum); the per-channel terms are left out.
        return 7 * math.prod(out)


@register
@dataclass(frozen=True)
class Dropout(Layer):
    """Zeroes each unit with probability rate in training and scales the kept ones by 1 / (1 - rate)."""
    rate: float = field(metadata={"read": _number(0, 1, high_open=True)})
    type: str = field(default="dropout", init=False)

    def describe(self) -> str:
        return f"dropout({self.rate:g})"

    def scalar_ops(self, shape: Shape, out: Shape) -> int:
        return math.prod(out)


def _same(n: int, k: int, s: int) -> tuple[int, int]:
    """(before, after) "same" padding of one axis of size n under a k-wide window at stride s."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _window(kind: str, name: str, k: int, stride: int, pad: int, shape: Shape, out_c: int | None = None) -> Shape:
    """(out_c, OH, OW) of k x k windows `stride` apart over a zero-padded (C, H, W) input; out_c None keeps C."""
    if len(shape) != 3:
        raise SpecError(f"field 'type' {kind} needs a (C, H, W) input, got {shape}; put it before the flatten")
    c, h, w = shape
    if k > min(h, w) + 2 * pad:
        raise SpecError(f"field '{name}' {k} is larger than its (padded) input {h + 2 * pad}x{w + 2 * pad}")
    return (c if out_c is None else out_c, _out_size(h, k, stride, pad), _out_size(w, k, stride, pad))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: Shape  # (C, H, W)
    classes: int
    layers: tuple[Layer, ...]
    shapes: tuple[Shape, ...]  # output shape of each layer, batch dimension left out

    def param_shapes(self) -> dict[str, Shape]:
        """Canonical parameter names and shapes, in layer order."""
        return {f"{i}.{suffix}": shape for i, layer in enumerate(self.layers)
                for suffix, shape in layer.param_shapes(self.input_of(i)).items()}

    def buffer_shapes(self) -> dict[str, Shape]:
        """Canonical buffer names ("{i}.running_mean", ...) and shapes, in layer order."""
        return {f"{i}.{suffix}": shape for i, layer in enumerate(self.layers)
                for suffix, shape in layer.buffer_shapes(self.input_of(i)).items()}

    def param_count(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    def input_of(self, i: int) -> Shape:
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


def _layer(i: int, table) -> Layer:
    where = f"layer {i}"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: must be a table, got {table!r}")
    kind = table.get("type")
    if kind not in LAYER_TYPES:
        raise SpecError(f"{where}: field 'type' is {kind!r}; choose one of {', '.join(LAYER_TYPES)}")
    where = f"layer {i} ({kind})"
    cls, allowed = LAYER_TYPES[kind], FIELDS[kind]
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
        kwargs[name] = _reader(cls, name)(where, name, table[name])
    return cls(**kwargs)


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
        where = f"layer {i} ({layer.type})"
        try:
            shape = layer.output_shape(shape)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        if any(d < 1 for d in shape):
            raise SpecError(f"{where}: output shape {shape} is empty")
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

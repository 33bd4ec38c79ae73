"""Framework-neutral model spec: a sequence of layers (models/layers.py), parsed from a decoded TOML table and
validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass

from fwbench.models.layer import (FIELDS, LAYER_TYPES, Layer, Shape, SpecError, fan_in, field_reader, read_int,
                                  register)
from fwbench.models.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Pool2D, ReLU,
                                   Sigmoid, Tanh)

# Layers, their registry and their base class are importable from here, as plugins and backends always have.
__all__ = ["FIELDS", "LAYER_TYPES", "Layer", "Shape", "SpecError", "fan_in", "register", "AvgPool2D", "BatchNorm",
           "Conv2D", "Dense", "Dropout", "Flatten", "MaxPool2D", "Pool2D", "ReLU", "Sigmoid", "Tanh", "ModelSpec",
           "parse"]


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
        kwargs[name] = field_reader(cls, name)(where, name, table[name])
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
    inp = tuple(read_int("input", "input", v, 1) for v in inp)
    classes = read_int("top level", "classes", data["classes"], 1)
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

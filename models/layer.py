"""The spec's layer vocabulary: the Layer base class, the registry of layer types, and the readers of TOML fields."""
from __future__ import annotations

import dataclasses
import math
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


def field_reader(cls: type[Layer], name: str) -> Callable[[str, str, Any], Any]:
    """How a field's TOML value is checked: its metadata's "read", else an integer of at least 1."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return meta.get("read", lambda where, name, value: read_int(where, name, value, 1))


def read_padding(where: str, name: str, value) -> int | str:
    """conv2d's padding: an integer >= 0, "valid" (read as 0) or "same"."""
    if value == "valid":
        return 0
    if value == "same":
        return value
    if isinstance(value, str):
        raise SpecError(f"{where}: field '{name}' is {value!r}; use an integer >= 0, \"valid\" or \"same\"")
    return read_int(where, name, value, 0)


def read_number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable:
    """A reader of a finite number between low and high, each end included unless it is open."""
    def read(where: str, name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpecError(f"{where}: field '{name}' must be a number, got {value!r}")
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise SpecError(f"{where}: field '{name}' must be in {span}, got {value!r}")
        return float(value)
    return read


def read_int(where: str, name: str, value, minimum: int) -> int:
    """An integer field of at least minimum (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: field '{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where}: field '{name}' must be >= {minimum}, got {value}")
    return value

"""The layer types a spec may use, each a frozen dataclass registered under its TOML name, in error-message order."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fwbench.models.layer import Layer, Shape, SpecError, read_number, read_padding, register


@register
@dataclass(frozen=True)
class Conv2D(Layer):
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int | str = field(default=0, metadata={"read": read_padding})  # an integer, or "same"
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
    eps: float = field(default=1e-5, metadata={"read": read_number(0, math.inf, low_open=True, high_open=True)})
    # running = (1 - momentum) * running + momentum * batch statistic
    momentum: float = field(default=0.1, metadata={"read": read_number(0, 1)})
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
    rate: float = field(metadata={"read": read_number(0, 1, high_open=True)})
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


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1

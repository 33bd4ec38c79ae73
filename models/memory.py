"""What training a spec needs in memory, estimated from the spec alone, before anything is allocated."""
from __future__ import annotations

from dataclasses import dataclass

from fwbench.models.spec import Flatten, ModelSpec

ITEMSIZE = {"float32": 4, "float64": 8}
# Moment tensors each optimizer keeps per parameter (torch.optim's rules; sgd without momentum keeps none).
STATE = {"adam": 2, "sgd": 1}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training run needs for the spec itself; frameworks, data and the interpreter come on top."""
    weights: int
    gradients: int
    optimizer: int
    activations: int  # every layer's output and its gradient, for one batch

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def parts(self) -> str:
        """The four parts, for a message."""
        return (f"weights {human(self.weights)}, gradients {human(self.gradients)}, optimizer state "
                f"{human(self.optimizer)}, activations {human(self.activations)}")


def estimate(spec: ModelSpec, batch_size: int, dtype: str = "float32", optimizer: str = "adam",
             momentum: float = 0.0) -> MemoryEstimate:
    """The estimate at this batch size, dtype and optimizer, from the spec's shapes alone."""
    size = ITEMSIZE[dtype]
    weights = spec.param_count() * size
    state = 0 if optimizer == "sgd" and not momentum else STATE.get(optimizer, 2)
    return MemoryEstimate(weights, weights, state * weights, 2 * batch_size * activation_elements(spec) * size)


def activation_elements(spec: ModelSpec) -> int:
    """Elements per example that backpropagation keeps: the input and each layer's output (a flatten is a view)."""
    total = _prod(spec.input)
    for layer, shape in zip(spec.layers, spec.shapes):
        if not isinstance(layer, Flatten):
            total += _prod(shape)
    return total


def human(n: float) -> str:
    """Bytes in binary units, e.g. 23.8 MiB or 5.7 TiB."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n

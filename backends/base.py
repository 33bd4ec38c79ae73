"""The one small protocol every backend implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from models.params import Params
from models.spec import ModelSpec


class BackendError(RuntimeError):
    """A backend cannot do what was asked (missing framework, unsupported device, ...)."""


@dataclass(frozen=True)
class OptimizerConfig:
    """The update rule; every backend implements it identically (torch.optim semantics)."""
    name: str = "adam"            # "sgd" or "adam"
    lr: float = 1e-3
    momentum: float = 0.0         # sgd: v = momentum * v + g; p -= lr * v
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8             # adam: p -= lr * mhat / (sqrt(vhat) + eps)


class Backend:
    """A spec lowered to one framework; parameters cross the boundary only in canonical layout."""

    name: ClassVar[str] = "base"
    framework: ClassVar[str] = "none"
    device: str  # "cpu" or "cuda", as asked for; native device objects stay private

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None asks for the framework's own initialiser, seeded."""
        raise NotImplementedError(f"{type(self).__name__} must implement __init__(spec, params, device, dtype, seed)")

    @classmethod
    def version(cls) -> str:
        """Version string of the framework."""
        raise NotImplementedError(f"{cls.__name__} must implement version()")

    @classmethod
    def devices(cls) -> list[str]:
        """Devices usable right now, e.g. ["cpu", "cuda"]."""
        raise NotImplementedError(f"{cls.__name__} must implement devices()")

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Pin full-precision, deterministic settings before a comparison; return what is now in force."""
        return {}

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        raise NotImplementedError(f"{self.name} does not support get_params()")

    def set_params(self, params: Params) -> None:
        """Replace the parameters from canonical layout."""
        raise NotImplementedError(f"{self.name} does not support set_params()")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x, as a host array."""
        raise NotImplementedError(f"{self.name} does not support forward()")

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and canonical gradients at the current parameters; no update."""
        raise NotImplementedError(f"{self.name} does not support loss_and_grads()")

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Create fresh optimizer state for the current parameters."""
        raise NotImplementedError(f"{self.name} does not support optimizer '{config.name}'")

    def set_lr(self, lr: float) -> None:
        """Change the learning rate without resetting optimizer state."""
        raise NotImplementedError(f"{self.name} does not support set_lr()")

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Move one batch to the device in native form; kept out of timed regions."""
        return x, y

    def train_step(self, batch: Any) -> Any:
        """One forward, backward and optimizer update; returns the loss (float() reads it)."""
        raise NotImplementedError(f"{self.name} does not support train_step()")

    def synchronize(self) -> None:
        """Block until all queued device work is done."""
        raise NotImplementedError(f"{self.name} must implement synchronize()")

    def peak_device_memory(self) -> int | None:
        """Bytes the framework allocated at most on the GPU so far; None on the CPU."""
        return None


def check_device(backend: type[Backend], device: str) -> None:
    """Raise BackendError unless the device is one the backend can use now."""
    available = backend.devices()
    if device not in available:
        hint = " (no GPU was found)" if device == "cuda" else ""
        raise BackendError(f"backend '{backend.name}' cannot use device '{device}'{hint}; "
                           f"available: {', '.join(available)}")

"""The one small protocol every backend implements."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from fwbench.models.params import Params
from fwbench.models.spec import ModelSpec


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
    # Execution modes, the default first ("torch@compile" picks one); each is benchmarked as its own row.
    # A backend with modes takes mode= in __init__ and sets self.mode; one without is called without it.
    modes: ClassVar[tuple[str, ...]] = ()
    mode: str | None = None
    # One line per mode on what it changes relative to stock framework code; reports print it, and a
    # mode that carries fwbench's own workarounds must say so (the default mode is stock code).
    MODE_NOTES: ClassVar[dict[str, str]] = {}
    # The layer types this backend's lowering table leaves out, which the conformance kit then marks "not
    # supported"; None (undeclared): any layer type it refuses to build is taken as not supported.
    UNSUPPORTED_LAYERS: ClassVar[frozenset[str] | None] = None
    # True when train_steps runs many steps in one call (a scan, a captured graph): the harness then
    # hands it whole segments between evaluations instead of a few dozen steps at a time.
    fused: bool = False
    # A data-parallel mode (torch@ddp, flax@dp) spreads each batch over `workers` and must give the global batch's
    # gradient; it sets self.workers, answers replicas_identical(), and gets the kit's data-parallel section.
    data_parallel: ClassVar[bool] = False
    workers: int = 1

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

    def get_buffers(self) -> Params:
        """Current buffers (batch norm's running statistics) in canonical layout, as host copies; {} when none."""
        return {}

    def set_buffers(self, buffers: Params) -> None:
        """Replace the buffers from canonical layout."""
        if buffers:
            raise NotImplementedError(f"{self.name} does not support set_buffers()")

    def set_masks(self, masks: Params | None) -> None:
        """Dropout keep-masks ("{i}.mask", bool NCHW) for every training pass from now on; None: the backend's RNG."""
        # The harness supplies masks in agree and the conformance kit, so every backend drops the same units.
        if masks:
            raise NotImplementedError(f"{self.name} does not support set_masks()")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x in evaluation mode (running statistics, no dropout), on the host."""
        raise NotImplementedError(f"{self.name} does not support forward()")

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers are left as they were."""
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
        """A training-mode forward, backward, update of parameters and buffers; the loss (float() reads it)."""
        raise NotImplementedError(f"{self.name} does not support train_step()")

    def prepare_epoch(self, x: np.ndarray, y: np.ndarray, order: Sequence[np.ndarray]) -> Any:
        """One epoch's batches (order[i] indexes batch i) on the device in native form; kept out of timed regions."""
        return [self.prepare_batch(x[idx], y[idx]) for idx in order]

    def train_steps(self, epoch: Any, start: int, stop: int, lrs: Sequence[float]) -> Sequence[Any]:
        """Steps start..stop-1 of a prepared epoch at lrs[0..]; their losses (float() reads each), maybe still queued."""
        losses = []
        for i, lr in zip(range(start, stop), lrs, strict=True):
            self.set_lr(lr)
            losses.append(self.train_step(epoch[i]))
        return losses

    def synchronize(self) -> None:
        """Block until all queued device work is done."""
        raise NotImplementedError(f"{self.name} must implement synchronize()")

    def replicas_identical(self) -> bool:
        """data_parallel only: whether every worker holds bit-identical parameters."""
        raise NotImplementedError(f"{self.name} is not data-parallel")

    def peak_device_memory(self) -> int | None:
        """Bytes the framework allocated at most on the GPU so far; None on the CPU."""
        return None


def check_mode(backend: type[Backend], mode: str | None) -> str | None:
    """The mode to use (None asks for the default); BackendError naming the choices if it is not offered."""
    if mode is None:
        return backend.modes[0] if backend.modes else None
    if mode not in backend.modes:
        offered = f"choose one of {', '.join(backend.modes)}" if backend.modes else "it has none"
        raise BackendError(f"backend '{backend.name}' has no mode '{mode}'; {offered}")
    return mode


def check_device(backend: type[Backend], device: str) -> None:
    """Raise BackendError unless the device is one the backend can use now."""
    available = backend.devices()
    if device not in available:
        hint = " (no GPU was found)" if device == "cuda" else ""
        raise BackendError(f"backend '{backend.name}' cannot use device '{device}'{hint}; "
                           f"available: {', '.join(available)}")

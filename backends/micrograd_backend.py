"""The `micrograd` backend: the spec lowered to the course's scalar Value engine, for tiny specs only."""
from __future__ import annotations

import gc
import random
from contextlib import contextmanager
from typing import ClassVar

import numpy as np

from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device
from fwbench.backends.engine.optim import SGD, Adam
from fwbench.backends.lowering import lower
from fwbench.backends.micrograd import layers
from fwbench.backends.micrograd.engine import Value
from fwbench.models.params import Params, check, check_masks, init_buffers, init_params
from fwbench.models.spec import ModelSpec

# Every scalar op is a Python object with a closure: about 4 microseconds (build, backward and
# freeing together) and 1 kB each, measured on a 2-core Xeon. tinycnn is ~9,900 ops a sample: a batch
# of 32 takes 1.3 s, the recipes' 64 takes 2.5 s, and at this cap (a batch of 100) 4.3 s and 1 GB.
MAX_SCALAR_OPS = 1_000_000
# The smallest batch worth training on. A model that cannot fit one under the cap is refused when it
# is built, so cnn (~292,000 ops a sample) and mlp (~110,000) fail at once, not after loading MNIST.
MIN_BATCH = 16
OPTIMIZERS = ("sgd", "adam")


class MicrogradBackend(Backend):
    """Python floats, one Value per scalar: the engine the course teaches, on the same specs."""

    name = "micrograd"
    framework = "micrograd"
    UNSUPPORTED_LAYERS = frozenset()  # layers.LAYERS covers every layer type
    scalar_limit: ClassVar[int] = MAX_SCALAR_OPS  # most scalar ops one graph may hold; see above

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float64", seed: int = 0):
        """Build the model; params=None uses the shared seeded initialiser (micrograd has none of its own)."""
        check_device(type(self), device)
        if dtype != "float64":
            raise BackendError(f"backend 'micrograd' computes in Python floats, which are float64, so dtype "
                               f"'{dtype}' is not available; run it with --dtype float64")
        self.layer_ops = lower(layers.LAYERS, spec, "micrograd")
        self.ops_per_sample = scalar_ops(spec)
        if self.ops_per_sample * MIN_BATCH > MAX_SCALAR_OPS:
            raise BackendError(_too_big(spec, f"{self.ops_per_sample:,} per sample, too many for even a batch "
                                              f"of {MIN_BATCH}", "use --model tinycnn or a smaller spec"))
        self.spec, self.device, self.dtype = spec, device, np.dtype(dtype)
        if params is None:
            params = init_params(spec, seed, dtype)
        check(spec, params)
        # Owned copies: the optimizer updates these arrays in place, so they must never alias the caller's.
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.optimizer: SGD | Adam | None = None
        self.buffers = init_buffers(spec, "float64")
        self.masks: Params | None = None
        self.rng = random.Random(seed)  # dropout's own draws, when the harness gives no masks

    @classmethod
    def version(cls) -> str:
        """The engine has no release; say what it is."""
        return "course scalar engine, Python floats"

    @classmethod
    def devices(cls) -> list[str]:
        """Only the CPU."""
        return ["cpu"]

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Nothing to pin: every op is one correctly rounded IEEE double operation."""
        return {"arithmetic": "Python float (IEEE 754 double), one scalar op at a time"}

    def get_params(self) -> Params:
        """Copies of the current parameters."""
        return {k: a.copy() for k, a in self.params.items()}

    def set_params(self, params: Params) -> None:
        """Copy params in; arrays keep their identity so optimizer state stays attached."""
        check(self.spec, params)
        for k, a in self.params.items():
            np.copyto(a, params[k], casting="same_kind")

    def get_buffers(self) -> Params:
        """Copies of the running statistics."""
        return {k: a.copy() for k, a in self.buffers.items()}

    def set_buffers(self, buffers: Params) -> None:
        """Copy buffers in."""
        check(self.spec, buffers, "buffers")
        for k, a in self.buffers.items():
            np.copyto(a, buffers[k], casting="same_kind")

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: draw them from the backend's rng."""
        if masks is not None:
            check_masks(self.spec, masks, len(next(iter(masks.values()))) if masks else 0)
            masks = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
        self.masks = masks

    def _logits(self, values: dict[str, list], x: np.ndarray, run: layers.Run) -> list[list[Value]]:
        """Run the layers of the spec on an NCHW batch; each sample's logits."""
        h = [to_values(sample) for sample in x]
        for i, (op, layer) in enumerate(zip(self.layer_ops, self.spec.layers)):
            h = op(h, i, layer, values.get(f"{i}.weight"), values.get(f"{i}.bias"), run)
        return h

    def _backprop(self, x: np.ndarray, y: np.ndarray, update: bool) -> tuple[float, Params]:
        """A training pass: build the batch's graph from the current parameters, run backward, read the gradients."""
        if self.masks:
            check_masks(self.spec, self.masks, len(x))
        values = {k: to_values(a) for k, a in self.params.items()}
        run = layers.Run(True, self.buffers, update, self.masks, self.rng)
        loss = layers.cross_entropy(self._logits(values, x, run), y.tolist())
        loss.backward()
        return loss.data, {k: from_grads(v, self.params[k].shape) for k, v in values.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) in evaluation mode, computed in chunks that each fit the cap."""
        x = np.asarray(x, dtype=np.float64)
        # Nothing is differentiated and evaluation treats each sample on its own (running statistics, no
        # dropout), so splitting changes no result; evaluation passes 1,000 images at once.
        chunk = max(1, MAX_SCALAR_OPS // self.ops_per_sample)
        rows = []
        for i in range(0, len(x), chunk):
            with freed_in_one_pass():
                values = {k: to_values(a) for k, a in self.params.items()}
                logits = self._logits(values, x[i:i + chunk], layers.Run(False, self.buffers))
                rows += [[v.data for v in sample] for sample in logits]
                del values, logits
        return np.array(rows, dtype=np.float64).reshape(len(x), self.spec.classes)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and every parameter's gradient; parameters and buffers are untouched."""
        return self._checked_backprop(*self.prepare_batch(x, y), update=False)

    def _checked_backprop(self, x: np.ndarray, y: np.ndarray, update: bool) -> tuple[float, Params]:
        """_backprop, after refusing a batch whose graph would pass the cap."""
        ops = len(x) * self.ops_per_sample
        if ops > MAX_SCALAR_OPS:
            fix = f"use a smaller --batch-size (at most {MAX_SCALAR_OPS // self.ops_per_sample})"
            if self.spec.name != "tinycnn":
                fix += " or --model tinycnn"
            raise BackendError(_too_big(self.spec, f"{ops:,} for a batch of {len(x)}", fix))
        with freed_in_one_pass():
            return self._backprop(x, y, update)

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh SGD or Adam state over the parameter arrays."""
        arrays = list(self.params.values())
        if config.name == "sgd":
            self.optimizer = SGD(arrays, config.lr, config.momentum)
        elif config.name == "adam":
            self.optimizer = Adam(arrays, config.lr, config.betas, config.eps)
        else:
            raise BackendError(f"backend 'micrograd' has no optimizer '{config.name}'; "
                               f"choose one of {', '.join(OPTIMIZERS)}")

    def set_lr(self, lr: float) -> None:
        """New learning rate; moments and velocities are kept."""
        self._require_optimizer().lr = lr

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x as float64, y as int64; no copy when they already are."""
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)

    def train_step(self, batch: tuple[np.ndarray, np.ndarray]) -> float:
        """One training forward, backward and update, the running statistics included; returns the loss."""
        optimizer = self._require_optimizer()
        loss, grads = self._checked_backprop(*batch, update=True)
        optimizer.step([grads[k] for k in self.params])
        return loss

    def synchronize(self) -> None:
        """Python runs eagerly; nothing is queued."""

    def _require_optimizer(self) -> SGD | Adam:
        if self.optimizer is None:
            raise BackendError("backend 'micrograd' has no optimizer yet; call init_optimizer(config) first")
        return self.optimizer


def scalar_ops(spec: ModelSpec) -> int:
    """Scalar ops for one sample: each layer's (see Layer.scalar_ops), and three per class for the loss."""
    return 3 * spec.classes + sum(layer.scalar_ops(spec.input_of(i), shape)
                                  for i, (layer, shape) in enumerate(zip(spec.layers, spec.shapes)))


def _too_big(spec: ModelSpec, needs: str, fix: str) -> str:
    """The one-line refusal: why (speed), how much, and what to run instead."""
    return (f"backend 'micrograd' computes with Python scalars (about 4 us each), so it takes at most "
            f"{MAX_SCALAR_OPS:,} scalar ops per batch; model '{spec.name}' needs {needs}; {fix}")


def to_values(a: np.ndarray) -> list:
    """An array as nested lists of leaf Values of the same shape; tolist() gives Python floats."""
    def nest(e):
        return [nest(v) for v in e] if isinstance(e, list) else Value(e)
    return nest(a.tolist())


def from_grads(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """The .grad of each Value in nested lists, as a float64 array of the parameter's shape."""
    def nest(e):
        return [nest(v) for v in e] if isinstance(e, list) else e.grad
    grads = np.array(nest(values), dtype=np.float64)
    assert grads.shape == shape, (grads.shape, shape)
    return grads


@contextmanager
def freed_in_one_pass():
    """Pause the cycle collector while a graph is built and used; free the graph in one pass after."""
    # Each node's _backward closure refers to the node (the course's design), so a graph is hundreds
    # of thousands of reference cycles. Left running, the collector rescans the growing graph every
    # few hundred allocations: tinycnn at batch 32 took 9 s that way instead of 1.7 s.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()

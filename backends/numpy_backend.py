"""The `numpy` backend: the spec lowered to the from-scratch engine in backends/engine."""
from __future__ import annotations

import numpy as np

from backends.base import Backend, BackendError, OptimizerConfig, check_device
from backends.engine import (SGD, Adam, Tensor, conv2d, conv2d_maxpool, cross_entropy, dense, flatten, maxpool2d,
                             relu)
from models.params import Params, check, init_params
from models.spec import Conv2D, Dense, Flatten, MaxPool2D, ModelSpec, ReLU

DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")
# conv2d_maxpool reproduces these two ops, conventions included (relu'(0) = 0, first max wins). Where a
# subclass or a test swaps either for another convention, the unfused ops run instead.
FUSED_OPS = (relu, maxpool2d)


class NumpyBackend(Backend):
    """Pure NumPy: canonical layout is the native layout, so conversion is only a copy and a cast."""

    name = "numpy"
    framework = "numpy"

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None uses the shared seeded initialiser (NumPy has no default of its own)."""
        check_device(type(self), device)
        if dtype not in DTYPES:
            raise BackendError(f"backend 'numpy' does not support dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        self.spec, self.device, self.dtype = spec, device, np.dtype(dtype)
        if params is None:
            params = init_params(spec, seed, dtype)
        check(spec, params)
        # Owned copies: the optimizer updates these arrays in place, so they must never alias the caller's.
        # All of them are views of one flat array, and their gradients are gathered into another, so
        # the optimizer runs each of its operations once over every parameter instead of once per tensor.
        self.flat = np.empty(sum(np.size(v) for v in params.values()), dtype=self.dtype)
        self.flat_grad = np.empty_like(self.flat)
        self.params, self.grad_views, start = {}, [], 0
        for k, v in params.items():
            stop = start + np.size(v)
            self.params[k] = Tensor(self.flat[start:stop].reshape(np.shape(v)), requires_grad=True)
            self.params[k].data[...] = v
            self.grad_views.append(self.flat_grad[start:stop].reshape(np.shape(v)))
            start = stop
        self.optimizer: SGD | Adam | None = None

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Nothing to pin: NumPy computes in the array dtype; report the BLAS it uses."""
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {}).get("name", "unknown")
        return {"blas": blas}

    @classmethod
    def version(cls) -> str:
        """NumPy's version string."""
        return f"numpy {np.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """Only the CPU."""
        return ["cpu"]

    def get_params(self) -> Params:
        """Copies of the current parameters."""
        return {k: t.data.copy() for k, t in self.params.items()}

    def set_params(self, params: Params) -> None:
        """Copy params in, cast to the backend dtype; arrays keep their identity so optimizer state stays attached."""
        check(self.spec, params)
        for k, t in self.params.items():
            np.copyto(t.data, params[k], casting="same_kind")

    def _logits(self, x: np.ndarray) -> Tensor:
        """Run the layers of the spec on an NCHW batch."""
        h = Tensor(x)
        layers = self.spec.layers
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, Conv2D):
                w, b = self.params[f"{i}.weight"], self.params[f"{i}.bias"]
                size, with_relu, taken = _pool_after(layers, i)
                if size and (relu, maxpool2d) == FUSED_OPS:
                    # conv [relu] maxpool [relu] as one op: the same values and gradients (see conv2d_maxpool).
                    h = conv2d_maxpool(h, w, b, layer.stride, layer.padding, size, with_relu)
                    i += taken
                    continue
                h = conv2d(h, w, b, layer.stride, layer.padding)
            elif isinstance(layer, ReLU):
                if i + 1 < len(layers) and isinstance(layers[i + 1], MaxPool2D):
                    i += 1
                    continue  # applied after the pool, on the smaller array; see below
                h = relu(h)
            elif isinstance(layer, MaxPool2D):
                h = maxpool2d(h, layer.size, layer.step)
                # relu then maxpool == maxpool then relu, gradients included: relu is monotone, so a
                # window's first max is the same either way whenever it is > 0, and the gradient is 0 otherwise.
                if i > 0 and isinstance(layers[i - 1], ReLU):
                    h = relu(h)
            elif isinstance(layer, Flatten):
                h = flatten(h)
            elif isinstance(layer, Dense):
                h = dense(h, self.params[f"{i}.weight"], self.params[f"{i}.bias"])
            else:
                raise BackendError(f"backend 'numpy' has no lowering for layer {i} ({layer.type})")
            i += 1
        return h

    def _loss(self, x: np.ndarray, y: np.ndarray) -> Tensor:
        """Forward and backward; leaves gradients in each parameter's .grad."""
        for t in self.params.values():
            t.zero_grad()
        loss = cross_entropy(self._logits(x), y)
        loss.backward()
        return loss

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes)."""
        return self._logits(np.asarray(x, dtype=self.dtype)).data.copy()

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and a copy of every parameter's gradient; parameters are untouched."""
        x, y = self.prepare_batch(x, y)
        loss = self._loss(x, y)
        return float(loss.data), {k: t.grad.copy() for k, t in self.params.items()}

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh SGD or Adam state over the parameter arrays."""
        if config.name == "sgd":
            self.optimizer = SGD([self.flat], config.lr, config.momentum)
        elif config.name == "adam":
            self.optimizer = Adam([self.flat], config.lr, config.betas, config.eps)
        else:
            raise BackendError(f"backend 'numpy' has no optimizer '{config.name}'; choose one of {', '.join(OPTIMIZERS)}")

    def set_lr(self, lr: float) -> None:
        """New learning rate; moments and velocities are kept."""
        self._require_optimizer().lr = lr

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x in the backend dtype, y as int64; no copy when they already are."""
        return np.asarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64)

    def train_step(self, batch: tuple[np.ndarray, np.ndarray]) -> np.floating:
        """One forward, backward and update; returns the loss as a NumPy scalar."""
        optimizer = self._require_optimizer()
        # A diverging run overflows; the harness reports the non-finite loss itself, once.
        with np.errstate(over="ignore", invalid="ignore"):
            loss = self._loss(*batch)
        for t, g in zip(self.params.values(), self.grad_views):
            np.copyto(g, t.grad)
        optimizer.step([self.flat_grad])
        return loss.data[()]

    def synchronize(self) -> None:
        """NumPy runs eagerly; nothing is queued."""

    def _require_optimizer(self) -> SGD | Adam:
        if self.optimizer is None:
            raise BackendError("backend 'numpy' has no optimizer yet; call init_optimizer(config) first")
        return self.optimizer


def _pool_after(layers: tuple, i: int) -> tuple[int, bool, int]:
    """For the conv at layers[i]: (pool size, relu?, layers taken) when a maxpool with windows that do
    not overlap follows, with a relu before and/or after it; (0, False, 1) otherwise."""
    j, relu_ = i + 1, False
    if j < len(layers) and isinstance(layers[j], ReLU):
        j, relu_ = j + 1, True
    pool = layers[j] if j < len(layers) else None
    if not (isinstance(pool, MaxPool2D) and pool.step == pool.size):
        return 0, False, 1
    j += 1
    if j < len(layers) and isinstance(layers[j], ReLU):
        j, relu_ = j + 1, True  # relu both before and after the pool: the second changes nothing
    return pool.size, relu_, j - i

"""The `numpy` backend: the spec lowered to the from-scratch engine in backends/engine, on NumPy or (cuda) CuPy."""
from __future__ import annotations

import numpy as np

from backends.base import Backend, BackendError, OptimizerConfig, check_device
from backends.engine import (SGD, Adam, Tensor, conv2d, conv2d_maxpool, cross_entropy, dense, flatten, maxpool2d,
                             relu)
from models.params import Params, check, init_params
from models.spec import Conv2D, Dense, Flatten, MaxPool2D, ModelSpec, ReLU

DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")

class NumpyBackend(Backend):
    """NumPy, or CuPy on cuda: canonical layout is the native layout, so conversion is a copy, a cast and a transfer."""

    name = "numpy"
    framework = "numpy"
    # conv2d_maxpool reproduces conv, relu and maxpool2d, their conventions included (relu'(0) = 0, first
    # max wins); a subclass that swaps relu or maxpool2d for another convention turns the fusion off.
    fuse_conv_pool = True

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None uses the shared seeded initialiser (NumPy has no default of its own)."""
        # The engine takes its array module from its arrays: CuPy's on cuda, so the same code runs there.
        # Only cuda probes for CuPy; a CPU build never tries to import it.
        if device == "cuda":
            self.xp = load_cupy()
        else:
            if device != "cpu":
                check_device(type(self), device)  # refuses it, naming the devices there are
            self.xp = np
        if dtype not in DTYPES:
            raise BackendError(f"backend 'numpy' does not support dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        self.spec, self.device, self.dtype = spec, device, np.dtype(dtype)
        if params is None:
            params = init_params(spec, seed, dtype)
        check(spec, params)
        # Owned copies: the optimizer updates these arrays in place, so they must never alias the caller's.
        # All of them are views of one flat array, and their gradients are gathered into another, so
        # the optimizer runs each of its operations once over every parameter instead of once per tensor.
        self.flat = self.xp.empty(sum(np.size(v) for v in params.values()), dtype=self.dtype)
        self.flat_grad = self.xp.empty_like(self.flat)
        self.params, self.grad_views, start = {}, [], 0
        for k, v in params.items():
            stop = start + np.size(v)
            self.params[k] = Tensor(self.flat[start:stop].reshape(np.shape(v)), requires_grad=True)
            self.params[k].data[...] = self.xp.asarray(v)
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
        """The CPU, and cuda when CuPy imports and sees a GPU."""
        try:
            load_cupy()
        except BackendError:
            return ["cpu"]
        return ["cpu", "cuda"]

    def get_params(self) -> Params:
        """Copies of the current parameters, on the host."""
        return {k: self._host(t.data) for k, t in self.params.items()}

    def set_params(self, params: Params) -> None:
        """Copy params in, cast to the backend dtype; arrays keep their identity so optimizer state stays attached."""
        check(self.spec, params)
        for k, t in self.params.items():
            self.xp.copyto(t.data, self.xp.asarray(params[k]), casting="same_kind")

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
                if size and self.fuse_conv_pool:
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
        """Logits (N, classes), on the host."""
        return self._host(self._logits(self.xp.asarray(x, dtype=self.dtype)).data)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and a copy of every parameter's gradient; parameters are untouched."""
        x, y = self.prepare_batch(x, y)
        loss = self._loss(x, y)
        return float(loss.data), {k: self._host(t.grad) for k, t in self.params.items()}

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
        """x in the backend dtype, y as int64, on the device; no copy on the CPU when they already are."""
        return self.xp.asarray(x, dtype=self.dtype), self.xp.asarray(y, dtype=np.int64)

    def train_step(self, batch: tuple[np.ndarray, np.ndarray]) -> np.floating:
        """One forward, backward and update; returns the loss: a NumPy scalar, or a 0-d CuPy array (no sync)."""
        optimizer = self._require_optimizer()
        # A diverging run overflows; the harness reports the non-finite loss itself, once.
        with np.errstate(over="ignore", invalid="ignore"):
            loss = self._loss(*batch)
        for t, g in zip(self.params.values(), self.grad_views):
            self.xp.copyto(g, t.grad)
        optimizer.step([self.flat_grad])
        return loss.data[()]

    def synchronize(self) -> None:
        """Wait for CuPy's queued kernels; NumPy runs eagerly, so nothing is queued on the CPU."""
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()

    def peak_device_memory(self) -> int | None:
        """On cuda, the bytes CuPy's default memory pool holds (its high-water mark); None on the CPU."""
        # The pool keeps freed blocks for reuse and never shrinks unless asked to, so what it holds is
        # at least the peak of live arrays: torch's max_memory_reserved, not max_memory_allocated.
        return None if self.xp is np else int(self.xp.get_default_memory_pool().total_bytes())

    def _host(self, a) -> np.ndarray:
        """A host NumPy copy of a backend array."""
        return a.copy() if self.xp is np else self.xp.asnumpy(a)

    def _require_optimizer(self) -> SGD | Adam:
        if self.optimizer is None:
            raise BackendError("backend 'numpy' has no optimizer yet; call init_optimizer(config) first")
        return self.optimizer


def load_cupy():
    """The cupy module, when it imports and sees a GPU; otherwise a one-line BackendError saying what is missing."""
    refused = "backend 'numpy' cannot use device 'cuda'"
    try:
        import cupy
    except Exception as e:  # a broken install or a CUDA library mismatch fails in many ways
        if isinstance(e, ModuleNotFoundError) and e.name == "cupy":
            raise BackendError(f"{refused}: it needs CuPy, which is not installed; "
                               "pip install cupy-cuda12x (match your CUDA version)") from e
        raise BackendError(f"{refused}: CuPy failed to import ({_first_line(e)})") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or CUDA's runtime error: no GPU either way
        raise BackendError(f"{refused}: CuPy sees no GPU ({_first_line(e)})") from e
    if count < 1:
        raise BackendError(f"{refused}: CuPy sees no GPU (0 devices)")
    return cupy


def _first_line(e: Exception) -> str:
    """The first line of an error's message (CuPy's import errors run to a page), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _pool_after(layers: tuple, i: int) -> tuple[int, bool, int]:
    """The conv at layers[i]: (pool size, relu?, layers taken) of a fusable [relu] maxpool [relu]; or (0, False, 1)."""
    j, relu_ = i + 1, False
    if j < len(layers) and isinstance(layers[j], ReLU):
        j, relu_ = j + 1, True
    pool = layers[j] if j < len(layers) else None
    # The fused op records each window's winner as a uint8 (1 + its position), so windows up to 15 x 15.
    if not (isinstance(pool, MaxPool2D) and pool.step == pool.size and pool.size ** 2 < 256):
        return 0, False, 1
    j += 1
    if j < len(layers) and isinstance(layers[j], ReLU):
        j, relu_ = j + 1, True  # relu both before and after the pool: the second changes nothing
    return pool.size, relu_, j - i

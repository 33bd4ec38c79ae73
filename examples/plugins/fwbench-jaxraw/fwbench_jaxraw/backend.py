"""JaxRawBackend: the spec on raw jax.numpy / jax.lax, one jitted step, its own SGD and Adam."""
from __future__ import annotations

from functools import partial

import jax
import numpy as np

from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device
from fwbench.models.params import Params, check, check_masks, init_buffers
from fwbench.models.spec import ModelSpec

from fwbench_jaxraw import layers, optim

DTYPES = {"float32": np.float32, "float64": np.float64}
OPTIMIZERS = ("sgd", "adam")


class JaxRawBackend(Backend):
    """jax.lax ops in NCHW/OIHW, so canonical parameters are the native ones: converting is a cast and a copy."""

    name = "jaxraw"
    framework = "jax"
    UNSUPPORTED_LAYERS = frozenset()  # layers.LAYERS covers every layer type; the conformance kit holds it to that

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None draws torch's default scheme with jax.random, seeded."""
        check_device(type(self), device)
        if dtype not in DTYPES:
            raise BackendError(f"backend 'jaxraw' does not support dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        layers.check_layers(spec)
        if dtype == "float64":
            # Process-wide, and it must come before float64 arrays exist; float32 models stay float32
            # afterwards because every array and hyperparameter we make has an explicit dtype.
            jax.config.update("jax_enable_x64", True)
        self.spec, self.device, self.dtype, self.seed = spec, device, DTYPES[dtype], seed
        self._dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        self._forward = jax.jit(partial(layers.evaluate, spec))
        # has_aux: the training loss also returns the updated buffers, which loss_and_grads then drops.
        self._grad = jax.jit(jax.value_and_grad(partial(layers.loss, spec, seed), has_aux=True))
        self._step = self.opt_state = None
        self.masks: dict | None = None
        self._passes = 0  # training passes so far: folded into the dropout key, so each draws new masks
        if params is None:
            params = {k: np.asarray(v) for k, v in layers.init(spec, seed, self.dtype).items()}
        self.set_params(params)
        self.set_buffers(init_buffers(spec, dtype))

    @classmethod
    def version(cls) -> str:
        """jax and jaxlib versions (the plugin uses nothing else)."""
        import jaxlib
        return f"jax {jax.__version__} / jaxlib {jaxlib.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """CPU, plus CUDA when jax sees a GPU."""
        try:
            gpu = any(d.platform in ("gpu", "cuda") for d in jax.devices("gpu"))
        except RuntimeError:  # a jaxlib built without a GPU backend
            gpu = False
        return ["cpu", "cuda"] if gpu else ["cpu"]

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Highest matmul precision everywhere (every op already asks for it); report x64."""
        jax.config.update("jax_default_matmul_precision", "highest")
        return {"matmul_precision": "highest", "op_precision": str(layers.PRECISION),
                "x64_enabled": bool(jax.config.jax_enable_x64)}

    # The one place parameters and buffers cross the boundary. Native layout is canonical, so this only casts,
    # copies and moves: the copy matters, because the jitted step donates (overwrites) these arrays.
    def _to_device(self, arrays: Params) -> dict:
        return {k: jax.device_put(np.array(v, self.dtype), self._dev) for k, v in arrays.items()}

    @staticmethod
    def _to_host(tree: dict) -> Params:
        return {k: np.array(v) for k, v in tree.items()}

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return self._to_host(self.params)

    def set_params(self, params: Params) -> None:
        """Replace the parameters; optimizer state, if any, is kept."""
        check(self.spec, params)
        self.params = self._to_device(params)

    def get_buffers(self) -> Params:
        """Batch norm's running statistics in canonical layout, as host NumPy arrays; {} when the spec has none."""
        return self._to_host(self.buffers)

    def set_buffers(self, buffers: Params) -> None:
        """Replace the running statistics."""
        check(self.spec, buffers, "buffers")
        self.buffers = self._to_device(buffers)

    def set_masks(self, masks: Params | None) -> None:
        """The harness's dropout keep-masks for every training pass from now on; None: this backend's own draws."""
        if masks is not None:
            check_masks(self.spec, masks, len(next(iter(masks.values()))) if masks else 0)
            masks = {k: jax.device_put(np.array(v, bool), self._dev) for k, v in masks.items()}
        self.masks = masks  # switching between None and masks retraces the jitted functions once each way

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x in evaluation mode (running statistics, no dropout), on the host."""
        return np.array(self._forward(self.params, self.buffers, self._x(x)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers stay as they were."""
        (loss, _updated_buffers), grads = self._grad(self.params, self.buffers, *self.prepare_batch(x, y),
                                                     self.masks, self._count())
        return float(loss), self._to_host(grads)

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh optimizer state and the jitted step that uses it."""
        if config.name == "sgd":
            opt = optim.sgd(config.momentum)
        elif config.name == "adam":
            opt = optim.adam(config.betas, config.eps)
        else:
            raise BackendError(f"backend 'jaxraw' has no optimizer '{config.name}'; "
                               f"choose one of {', '.join(OPTIMIZERS)}")
        self.opt_state = jax.device_put(opt.init(self.params), self._dev)
        self._lr = self.dtype(config.lr)
        training_loss = partial(layers.loss, self.spec, self.seed)

        def step(params, state, buffers, x, y, lr, masks, count):
            grad_fn = jax.value_and_grad(training_loss, has_aux=True)
            (loss, buffers), grads = grad_fn(params, buffers, x, y, masks, count)
            params, state = opt.update(params, grads, state, lr)
            return params, state, buffers, loss

        # lr is an argument, not a constant, so set_lr never recompiles; donating params, state and
        # buffers lets XLA update them in place, as torch.optim and torch's batch norm do.
        self._step = jax.jit(step, donate_argnums=(0, 1, 2))

    def set_lr(self, lr: float) -> None:
        """New learning rate for the next steps; moments are kept and nothing recompiles."""
        if self._step is None:
            raise BackendError("backend 'jaxraw' has no optimizer yet; call init_optimizer(config) first")
        self._lr = self.dtype(lr)  # same dtype and shape every time: the jit cache keeps hitting

    def _count(self) -> np.uint32:
        """This training pass's number, counting from 0: one dtype every time, so the jit cache keeps hitting."""
        self._passes += 1
        return np.uint32(self._passes - 1)

    def _x(self, x: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(x, self.dtype), self._dev)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """NCHW x in the backend dtype and int32 labels, on the device."""
        return self._x(x), jax.device_put(np.asarray(y, np.int32), self._dev)

    def train_step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One jitted training pass, update and buffer update; returns the loss as a device scalar (no host sync)."""
        if self._step is None:
            raise BackendError("backend 'jaxraw' has no optimizer yet; call init_optimizer(config) first")
        self.params, self.opt_state, self.buffers, loss = self._step(self.params, self.opt_state, self.buffers,
                                                                     *batch, self._lr, self.masks, self._count())
        return loss

    def synchronize(self) -> None:
        """Block until the queued steps have produced the current parameters, state and buffers (and so the loss)."""
        jax.block_until_ready((self.params, self.opt_state, self.buffers))

    def peak_device_memory(self) -> int | None:
        """XLA's peak_bytes_in_use on a GPU; None on the CPU."""
        if self.device != "cuda":
            return None
        return (self._dev.memory_stats() or {}).get("peak_bytes_in_use")

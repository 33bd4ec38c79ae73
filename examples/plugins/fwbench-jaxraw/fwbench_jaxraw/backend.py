"""JaxRawBackend: the spec on raw jax.numpy / jax.lax, one jitted step, its own SGD and Adam."""
from __future__ import annotations

from functools import partial

import jax
import numpy as np

from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device
from fwbench.models.params import Params, check
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
        self.spec, self.device, self.dtype = spec, device, DTYPES[dtype]
        self._dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        self._forward = jax.jit(partial(layers.apply, spec))
        self._grad = jax.jit(jax.value_and_grad(partial(layers.loss, spec)))
        self._step = self.opt_state = None
        if params is None:
            params = {k: np.asarray(v) for k, v in layers.init(spec, seed, self.dtype).items()}
        self.set_params(params)

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

    # The one place parameters cross the boundary. Native layout is canonical, so this only casts,
    # copies and moves: the copy matters, because the jitted step donates (overwrites) these buffers.
    def _to_device(self, params: Params) -> dict:
        return {k: jax.device_put(np.array(params[k], self.dtype), self._dev) for k in self.spec.param_shapes()}

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

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x, as a host array."""
        return np.array(self._forward(self.params, self._x(x)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and canonical gradients at the current parameters; no update."""
        loss, grads = self._grad(self.params, *self.prepare_batch(x, y))
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
        spec = self.spec

        def step(params, state, x, y, lr):
            loss, grads = jax.value_and_grad(partial(layers.loss, spec))(params, x, y)
            params, state = opt.update(params, grads, state, lr)
            return params, state, loss

        # lr is an argument, not a constant, so set_lr never recompiles; donating params and state
        # lets XLA update them in place, as torch.optim does.
        self._step = jax.jit(step, donate_argnums=(0, 1))

    def set_lr(self, lr: float) -> None:
        """New learning rate for the next steps; moments are kept and nothing recompiles."""
        if self._step is None:
            raise BackendError("backend 'jaxraw' has no optimizer yet; call init_optimizer(config) first")
        self._lr = self.dtype(lr)  # same dtype and shape every time: the jit cache keeps hitting

    def _x(self, x: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(x, self.dtype), self._dev)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """NCHW x in the backend dtype and int32 labels, on the device."""
        return self._x(x), jax.device_put(np.asarray(y, np.int32), self._dev)

    def train_step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One jitted update; returns the loss as a device scalar, so no host sync happens here."""
        if self._step is None:
            raise BackendError("backend 'jaxraw' has no optimizer yet; call init_optimizer(config) first")
        self.params, self.opt_state, loss = self._step(self.params, self.opt_state, *batch, self._lr)
        return loss

    def synchronize(self) -> None:
        """Block until the queued steps have produced the current parameters and state (and so the loss)."""
        jax.block_until_ready((self.params, self.opt_state))

    def peak_device_memory(self) -> int | None:
        """XLA's peak_bytes_in_use on a GPU; None on the CPU."""
        if self.device != "cuda":
            return None
        return (self._dev.memory_stats() or {}).get("peak_bytes_in_use")

"""The spec lowered to Flax (linen), trained with optax: one jitted step per batch, or many fused."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fwbench.backends import flax_kernels, flax_scan, layout
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode
from fwbench.backends.lowering import lower
from fwbench.models.params import Params, check
from fwbench.models.spec import Conv2D, Dense, Flatten, MaxPool2D, ModelSpec, ReLU, Sigmoid, Tanh

DTYPES = {"float32": np.float32, "float64": np.float64}
OPTIMIZERS = ("sgd", "adam")
NATIVE = {"weight": "kernel", "bias": "bias"}  # canonical suffix -> flax parameter name
# XLA may compute float32 convs/matmuls in TF32 or bf16 passes on GPU; HIGHEST pins full float32,
# matching torch with allow_tf32 off. It is set per layer, so no global jax config changes.
PRECISION = jax.lax.Precision.HIGHEST


def _conv(x, layer: Conv2D, net: Net, kw: dict):
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    # None is nn.Conv's own default, lax.conv_general_dilated.
    conv = flax_kernels.conv_general_dilated if net.kernels else None
    return nn.Conv(layer.out_channels, (k, k), strides=(s, s), padding=[(p, p), (p, p)],
                   conv_general_dilated=conv, **kw)(x)


def _max_pool(x, layer: MaxPool2D, net: Net, kw: dict):
    size, step = layer.size, layer.step
    return flax_kernels.max_pool(x, size, step) if net.kernels else nn.max_pool(x, (size, size), strides=(step, step))


# Layer type -> op(x, layer, net, kw) on an NHWC batch; kw holds a submodule's dtypes, precision and name "layer_i".
LAYERS: dict[type, Callable] = {
    Conv2D: _conv,
    ReLU: lambda x, layer, net, kw: nn.relu(x),
    MaxPool2D: _max_pool,
    # H, W, C order: layout.py permutes the next dense's rows.
    Flatten: lambda x, layer, net, kw: x.reshape((x.shape[0], -1)),
    Dense: lambda x, layer, net, kw: nn.Dense(layer.units, **kw)(x),
    Tanh: lambda x, layer, net, kw: nn.tanh(x),
    Sigmoid: lambda x, layer, net, kw: nn.sigmoid(x),
}


class Net(nn.Module):
    """The spec's layers over an NHWC batch; layer i's parameters live in submodule "layer_i"."""
    spec: ModelSpec
    dtype: Any = jnp.float32
    kernels: bool = False  # fwbench's custom VJPs for conv and pool (flax_kernels.py) instead of flax's stock ops

    @nn.compact
    def __call__(self, x):
        for i, (op, layer) in enumerate(zip(lower(LAYERS, self.spec, "flax"), self.spec.layers)):
            kw = dict(dtype=self.dtype, param_dtype=self.dtype, precision=PRECISION, name=f"layer_{i}")
            x = op(x, layer, self, kw)
        return x


def to_native(spec: ModelSpec, params: Params) -> dict:
    """Canonical -> flax tree {"layer_i": {"kernel", "bias"}} in channels-last layout."""
    tree: dict = {}
    for key, value in layout.to_channels_last(spec, params).items():
        i, kind = key.split(".")
        tree.setdefault(f"layer_{i}", {})[NATIVE[kind]] = value
    return tree


def from_native(spec: ModelSpec, tree: dict) -> Params:
    """Flax tree -> canonical; the same for parameters and gradients."""
    canonical = {v: k for k, v in NATIVE.items()}
    flat = {f"{name.removeprefix('layer_')}.{canonical[k]}": np.array(v)
            for name, sub in tree.items() for k, v in sub.items()}
    return layout.from_channels_last(spec, flat)


def _loss(model: Net, params, x, y):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _optimizer(config: OptimizerConfig, dtype) -> optax.GradientTransformation:
    """optax chain matching torch.optim; lr is optax.inject_hyperparams state, so set_lr never recompiles."""
    if config.name == "sgd":
        # optax.trace is t = g + mu * t, then scale by -lr: torch's SGD with dampening=0.
        # momentum=None (not 0.0) skips the trace entirely, as torch does.
        def make(learning_rate):
            return optax.sgd(learning_rate, momentum=config.momentum or None)
    elif config.name == "adam":
        # optax puts eps outside the sqrt (eps_root=0) with bias correction: torch's Adam rule;
        # only the rounding order differs (torch folds the corrections into lr and the denominator).
        def make(learning_rate):
            return optax.adam(learning_rate, b1=config.betas[0], b2=config.betas[1], eps=config.eps)
    else:
        raise BackendError(f"flax backend: unknown optimizer '{config.name}'; choose one of {', '.join(OPTIMIZERS)}")
    return optax.inject_hyperparams(make, hyperparam_dtype=dtype)(learning_rate=config.lr)


class FlaxBackend(Backend):
    """Flax linen on jax.jit, NHWC inside, optax optimizers; `step` jits one update, `scan` fuses many."""

    name = "flax"
    framework = "flax"
    UNSUPPORTED_LAYERS = frozenset()  # LAYERS covers every layer type
    modes = ("step", "scan", "step-tuned", "scan-tuned")
    # What each mode changes relative to stock flax, in plain words: the stock modes are what a flax user
    # writes, the "-tuned" ones add what fwbench wrote around XLA's CPU backend.
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "step": "stock flax.linen (nn.Conv, nn.max_pool) and optax; one jax.jit step per batch, "
                "parameters and optimizer state donated, the learning rate a traced argument",
        "scan": "stock layers as in step; the epoch resident on the device and each stretch of steps "
                "one compiled lax.fori_loop (backends/flax_scan.py)",
        "step-tuned": "step with fwbench's custom VJPs for the conv weight gradient and the 2x2 max-pool "
                      "backward (backends/flax_kernels.py); the same gradients up to float rounding",
        "scan-tuned": "scan with fwbench's custom VJPs for the conv weight gradient and the 2x2 max-pool "
                      "backward (backends/flax_kernels.py); the same gradients up to float rounding",
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Build the model; params=None asks for flax's default init (lecun_normal, zeros), seeded."""
        check_device(type(self), device)
        self.mode = check_mode(type(self), mode)
        self.fused = self.mode.startswith("scan")
        self.kernels = self.mode.endswith("-tuned")
        if dtype not in DTYPES:
            raise BackendError(f"flax backend: unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        if dtype == "float64":
            # Process-wide and must precede array creation; float32 models stay float32 afterwards
            # because every layer, input and hyperparameter gets an explicit dtype.
            jax.config.update("jax_enable_x64", True)
        self.spec, self.dtype, self.device = spec, DTYPES[dtype], device
        self._dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        self.model = Net(spec, self.dtype, self.kernels)
        dummy = jnp.zeros((1, *spec.input[1:], spec.input[0]), self.dtype)  # one NHWC sample
        init = partial(self.model.init, jax.random.PRNGKey(seed), dummy)
        # Shapes come from tracing alone; running init compiles the RNG (seconds), so only native init does.
        self.native_shapes = jax.tree_util.tree_map(lambda a: a.shape, jax.eval_shape(init)["params"])
        self.opt_state, self._step = None, None
        self._forward = jax.jit(self.model.apply)
        self._grad = jax.jit(jax.value_and_grad(lambda p, x, y: _loss(self.model, p, x, y)))
        if params is None:
            self._load(init()["params"])
        else:
            self.set_params(params)

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Highest matmul precision everywhere; report x64 and the per-layer precision."""
        jax.config.update("jax_default_matmul_precision", "highest")
        return {"matmul_precision": "highest", "layer_precision": str(PRECISION),
                "x64_enabled": bool(jax.config.jax_enable_x64)}

    @classmethod
    def version(cls) -> str:
        """Versions of flax and of the jax and optax it runs on."""
        return f"flax {flax.__version__} / jax {jax.__version__} / optax {optax.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """CPU, plus CUDA when jax sees a GPU."""
        try:
            gpu = any(d.platform in ("gpu", "cuda") for d in jax.devices("gpu"))
        except RuntimeError:  # jaxlib without a GPU backend
            gpu = False
        return ["cpu", "cuda"] if gpu else ["cpu"]

    def _load(self, native: dict) -> None:
        shapes = jax.tree_util.tree_map(np.shape, native)
        assert shapes == self.native_shapes, f"native shapes {shapes} != flax's {self.native_shapes}"
        cast = jax.tree_util.tree_map(lambda v: np.asarray(v, self.dtype), native)
        self.params = jax.device_put(cast, self._dev)

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return from_native(self.spec, self.params)

    def set_params(self, params: Params) -> None:
        """Replace the parameters; optimizer state, if any, is kept."""
        check(self.spec, params)
        self._load(to_native(self.spec, params))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x, as a host array."""
        return np.array(self._forward({"params": self.params}, self._x(x)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and canonical gradients at the current parameters."""
        loss, grads = self._grad(self.params, *self.prepare_batch(x, y))
        return float(loss), from_native(self.spec, grads)

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh optax state and the jitted train step that uses it."""
        tx = _optimizer(config, self.dtype)
        self.opt_state = jax.device_put(tx.init(self.params), self._dev)
        self._lr = self.dtype(config.lr)

        def step(params, opt_state, x, y, lr):
            opt_state.hyperparams["learning_rate"] = lr
            loss, grads = jax.value_and_grad(lambda p: _loss(self.model, p, x, y))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        # Donating params and state lets XLA update them in place, as torch.optim does; JAX's docs give
        # donate_argnums for this very train-step pattern, so the stock modes keep it too.
        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._scan, self._ragged = flax_scan.fuse(step), flax_scan.ragged_step(step)

    def set_lr(self, lr: float) -> None:
        """Set the injected learning rate for the next steps; moments are kept and nothing recompiles."""
        if self.opt_state is None:
            raise BackendError("flax backend: call init_optimizer() before set_lr()")
        # A host scalar, passed to the jitted step, which writes it into the optimizer state: a
        # device_put of its own here added ~0.18 ms to a ~0.5 ms step on an H200 (benchmarks/overhead.py).
        self._lr = self.dtype(lr)

    def _x(self, x: np.ndarray) -> jax.Array:
        # The one place inputs change layout: NCHW arrives, the network runs NHWC.
        return jax.device_put(layout.nchw_to_nhwc(np.asarray(x, self.dtype)), self._dev)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """NHWC x in the backend dtype and int32 labels, on the device."""
        return self._x(x), jax.device_put(np.asarray(y, np.int32), self._dev)

    def train_step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One jitted update; returns the loss as a device scalar, so no host sync happens here."""
        if self._step is None:
            raise BackendError("flax backend: call init_optimizer() before training")
        self.params, self.opt_state, loss = self._step(self.params, self.opt_state, *batch, self._lr)
        return loss

    def prepare_epoch(self, x: np.ndarray, y: np.ndarray, order) -> Any:
        """scan: the epoch's images, labels and batch indices resident on the device; step: a list of batches."""
        if not self.fused:
            return super().prepare_epoch(x, y, order)
        return flax_scan.resident(layout.nchw_to_nhwc(np.asarray(x, self.dtype)), y, order, self.dtype, self._dev)

    def train_steps(self, epoch: Any, start: int, stop: int, lrs) -> Any:
        """scan: the full batches of start..stop-1 in one compiled loop (plus the short last batch); losses on the host."""
        if not self.fused:
            return super().train_steps(epoch, start, stop, lrs)
        if self._step is None:
            raise BackendError("flax backend: call init_optimizer() before training")
        if not 0 <= start <= stop <= epoch.steps or len(lrs) != stop - start:
            raise BackendError(f"flax backend: steps {start}..{stop} with {len(lrs)} learning rates do not fit "
                               f"an epoch of {epoch.steps} steps")
        lrs = np.asarray(lrs, self.dtype)
        n = min(stop, len(epoch.full)) - start
        losses = []
        if n > 0:
            span = np.zeros(len(epoch.full), self.dtype)
            span[start:start + n] = lrs[:n]
            self.params, self.opt_state, fused = self._scan(self.params, self.opt_state, epoch.x, epoch.y,
                                                            epoch.full, span, np.int32(start), np.int32(start + n))
            losses.append(fused[start:start + n])
        if start < stop and stop > len(epoch.full):  # the short last batch: its own shape, its own compiled step
            self.params, self.opt_state, loss = self._ragged(self.params, self.opt_state, epoch.x, epoch.y,
                                                             epoch.ragged, lrs[-1])
            losses.append(loss)
        return flax_scan.to_host(losses)

    def peak_device_memory(self) -> int | None:
        """XLA's peak_bytes_in_use on a GPU."""
        if self.device != "cuda":
            return None
        return (self._dev.memory_stats() or {}).get("peak_bytes_in_use")

    def synchronize(self) -> None:
        """Block until the queued steps have produced the current parameters and state."""
        jax.block_until_ready((self.params, self.opt_state))

"""The spec lowered to Flax (linen), trained with optax: one jitted step per batch, or many fused."""
from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fwbench.backends import flax_net, flax_scan, jax_device, layout, optax_rule
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode
from fwbench.backends.flax_net import NO_NOISE, PRECISION, Net, Noise, from_native, to_native, variables
from fwbench.models.params import Params, check, check_masks, init_buffers
from fwbench.models.spec import Dropout, ModelSpec

DTYPES = {"float32": np.float32, "float64": np.float64}
# Every mode says so: nn.BatchNorm cannot follow the spec (see flax_net.TorchBatchNorm).
BATCHNORM = "; batchnorm is fwbench's linen module with PyTorch's running statistics, not nn.BatchNorm"


class FlaxBackend(Backend):
    """Flax linen on jax.jit, NHWC inside, optax optimizers; `step` jits one update, `scan` fuses many."""

    name = "flax"
    framework = "flax"
    UNSUPPORTED_LAYERS = frozenset()  # flax_net.LAYERS covers every layer type
    modes = ("step", "scan", "step-tuned", "scan-tuned")
    # What each mode changes relative to stock flax, in plain words: the stock modes are what a flax user
    # writes, the "-tuned" ones add what fwbench wrote around XLA's CPU backend.
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "step": "stock flax.linen (nn.Conv, nn.max_pool) and optax; one jax.jit step per batch, "
                "parameters and optimizer state donated, the learning rate a traced argument" + BATCHNORM,
        "scan": "stock layers as in step; the epoch resident on the device and each stretch of steps "
                "one compiled lax.fori_loop (backends/flax_scan.py)" + BATCHNORM,
        "step-tuned": "step with fwbench's custom VJPs for the conv weight gradient and the 2x2 max-pool "
                      "backward (backends/flax_kernels.py); the same gradients up to float rounding" + BATCHNORM,
        "scan-tuned": "scan with fwbench's custom VJPs for the conv weight gradient and the 2x2 max-pool "
                      "backward (backends/flax_kernels.py); the same gradients up to float rounding" + BATCHNORM,
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
        self._dev = self._placement(device)
        self.model = Net(spec, self.dtype, self.kernels)
        dummy = jnp.zeros((1, *spec.input[1:], spec.input[0]), self.dtype)  # one NHWC sample
        key = jax.random.PRNGKey(seed)
        init = partial(self.model.init, key, dummy)
        # Shapes come from tracing alone; running init compiles the RNG (seconds), so only native init does.
        shapes = jax.tree_util.tree_map(lambda a: a.shape, jax.eval_shape(init))
        self.native_shapes, self.stats_shapes = shapes["params"], shapes.get("batch_stats", {})
        self.opt_state, self._step = None, None
        self._forward = jax.jit(lambda p, s, x: self.model.apply(variables(p, s), x))
        self._grad = jax.jit(jax.value_and_grad(
            lambda p, s, x, y, noise: flax_net.loss(self.model, p, s, x, y, noise, False), has_aux=True))
        # Dropout on the backend's own RNG folds the count of training passes into the seed's key.
        self._key = key if any(isinstance(layer, Dropout) for layer in spec.layers) else None
        self._tick, self._masks = 0, None
        self.set_buffers(init_buffers(spec, dtype))
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
        return jax_device.devices()

    def _placement(self, device: str):
        """Where parameters, state and batches live: one device (flax@dp: every device of a mesh)."""
        return jax.devices("gpu" if device == "cuda" else "cpu")[0]

    def _along_batch(self, size: int):
        """Where a batch of `size` (or its dropout masks) lives: with the parameters (flax@dp: split over the mesh)."""
        return self._dev

    def _load(self, native: dict) -> None:
        shapes = jax.tree_util.tree_map(np.shape, native)
        assert shapes == self.native_shapes, f"native shapes {shapes} != flax's {self.native_shapes}"
        cast = jax.tree_util.tree_map(lambda v: np.asarray(v, self.dtype), native)
        self.params = jax.device_put(cast, self._dev)

    def get_buffers(self) -> Params:
        """Batch norm's running statistics in canonical form, as host NumPy arrays; {} without batch norm."""
        return from_native(self.spec, self.batch_stats, "buffers")

    def set_buffers(self, buffers: Params) -> None:
        """Replace the running statistics from canonical form."""
        check(self.spec, buffers, "buffers")
        native = to_native(self.spec, buffers, "buffers")
        shapes = jax.tree_util.tree_map(np.shape, native)
        assert shapes == self.stats_shapes, f"native buffer shapes {shapes} != flax's {self.stats_shapes}"
        self.batch_stats = jax.device_put(jax.tree_util.tree_map(lambda v: np.asarray(v, self.dtype), native),
                                          self._dev)

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: dropout draws from the seeded key."""
        if masks is not None:
            size = len(next(iter(masks.values()))) if masks else 0
            check_masks(self.spec, masks, size)
            native = layout.masks_to_channels_last(self.spec, masks)
            masks = {f"layer_{k.split('.')[0]}": jax.device_put(np.asarray(v, bool), self._along_batch(size))
                     for k, v in native.items()}
            self._mask_batch = size
        self._masks = masks

    def _noise(self, size: int, steps: int = 1) -> Noise:
        """Dropout's noise for the next `steps` training passes over batches of `size`; counts them."""
        if self._key is None:
            return NO_NOISE
        if self._masks is not None:
            if size != self._mask_batch:
                raise BackendError(f"flax backend: dropout masks for a batch of {self._mask_batch} are set, "
                                   f"but this is a batch of {size}; call set_masks for it")
            return Noise(masks=self._masks)
        tick, self._tick = self._tick, self._tick + steps
        return Noise(key=self._key, tick=np.int32(tick))

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return from_native(self.spec, self.params)

    def set_params(self, params: Params) -> None:
        """Replace the parameters; optimizer state, if any, is kept."""
        check(self.spec, params)
        self._load(to_native(self.spec, params))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation-mode logits (N, classes) for NCHW input x, as a host array."""
        return np.array(self._forward(self.params, self.batch_stats, self._x(x)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers stay as they are."""
        x, y = self.prepare_batch(x, y)
        (loss, _), grads = self._grad(self.params, self.batch_stats, x, y, self._noise(len(x)))
        return float(loss), from_native(self.spec, grads)

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh optax state and the jitted train step that uses it."""
        tx = optax_rule.torch_rule(config, self.dtype, "flax")
        self.opt_state = jax.device_put(tx.init(self.params), self._dev)
        self._lr = self.dtype(config.lr)

        def step(params, opt_state, stats, x, y, lr, noise):
            opt_state.hyperparams["learning_rate"] = lr
            (loss, stats), grads = jax.value_and_grad(
                lambda p: flax_net.loss(self.model, p, stats, x, y, noise, True), has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, stats, loss

        # Donating params and state lets XLA update them in place, as torch.optim does; JAX's docs give
        # donate_argnums for this very train-step pattern, so the stock modes keep it too.
        self._step = jax.jit(step, donate_argnums=(0, 1, 2))
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
        return jax.device_put(layout.nchw_to_nhwc(np.asarray(x, self.dtype)), self._along_batch(len(x)))

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """NHWC x in the backend dtype and int32 labels, on the device."""
        return self._x(x), jax.device_put(np.asarray(y, np.int32), self._along_batch(len(y)))

    def train_step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One jitted update; returns the loss as a device scalar, so no host sync happens here."""
        if self._step is None:
            raise BackendError("flax backend: call init_optimizer() before training")
        x, y = batch
        self.params, self.opt_state, self.batch_stats, loss = self._step(
            self.params, self.opt_state, self.batch_stats, x, y, self._lr, self._noise(len(x)))
        return loss

    def prepare_epoch(self, x: np.ndarray, y: np.ndarray, order) -> Any:
        """scan: the epoch's images, labels and batch indices resident on the device; step: a list of batches."""
        if not self.fused:
            return super().prepare_epoch(x, y, order)
        return flax_scan.resident(layout.nchw_to_nhwc(np.asarray(x, self.dtype)), y, order, self.dtype, self._dev)

    def train_steps(self, epoch: Any, start: int, stop: int, lrs) -> Any:
        """scan: the full batches of start..stop-1 in one compiled loop (plus the short last batch); host losses."""
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
        state = self.params, self.opt_state, self.batch_stats
        if n > 0:
            span = np.zeros(len(epoch.full), self.dtype)
            span[start:start + n] = lrs[:n]
            *state, fused = self._scan(*state, epoch.x, epoch.y, epoch.full, span, np.int32(start),
                                       np.int32(start + n), self._noise(epoch.full.shape[1], n))
            self.params, self.opt_state, self.batch_stats = state
            losses.append(fused[start:start + n])
        if start < stop and stop > len(epoch.full):  # the short last batch: its own shape, its own compiled step
            *state, loss = self._ragged(*state, epoch.x, epoch.y, epoch.ragged, lrs[-1],
                                        self._noise(len(epoch.ragged)))
            self.params, self.opt_state, self.batch_stats = state
            losses.append(loss)
        return flax_scan.to_host(losses)

    def peak_device_memory(self) -> int | None:
        """XLA's peak_bytes_in_use on a GPU."""
        return jax_device.peak_memory(self.device, self._dev)

    def synchronize(self) -> None:
        """Block until the queued steps have produced the current parameters and state."""
        jax.block_until_ready((self.params, self.opt_state, self.batch_stats))

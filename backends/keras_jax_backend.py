"""keras@jax: the keras backend's layers on Keras's JAX backend, called statelessly inside one jax.jit step."""
from __future__ import annotations

from typing import ClassVar

from fwbench.backends import keras_setup

keras_setup.select("jax", "keras@jax")  # before keras is imported

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fwbench.backends import jax_device, layout, optax_rule  # noqa: E402
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode  # noqa: E402
from fwbench.backends.keras_net import Net, masks_for, native_masks  # noqa: E402
from fwbench.models.params import Params, check  # noqa: E402
from fwbench.models.spec import ModelSpec  # noqa: E402

DTYPES = {"float32": np.float32}


class KerasJaxBackend(Backend):
    """The keras backend's Keras layers on JAX: the weights a pytree, each step one jax.jit with the flax backend's
    optax rule, so the row against flax@step is what the Keras layer costs."""

    name = "keras"
    framework = "keras"
    UNSUPPORTED_LAYERS = frozenset()  # keras_layers.LAYERS covers every layer type
    modes = ("jax",)
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "jax": "the same Keras 3 layers on Keras's JAX backend (KERAS_BACKEND=jax, so a process of its own, as "
               "every bench cell is), called through keras.StatelessScope inside one jax.jit step per batch, "
               "parameters and state donated; the loss and the optax update are flax@step's; batchnorm is "
               "fwbench's layer with PyTorch's running statistics",
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Build the model; params=None asks for Keras's default init (Glorot uniform kernels, zeros), seeded."""
        check_device(type(self), device)
        self.mode = check_mode(type(self), mode)
        self.fused = False
        if dtype == "float64":
            # Measured: with jax_enable_x64, a float64 model's tanh and batch-norm means came out float32.
            raise BackendError("keras@jax computes in float32 only: Keras's type promotion turns 64-bit results "
                               "32-bit on every backend but TensorFlow (keras.backend.result_type('float64', float) "
                               "is float32 on JAX); use float32, or keras@graph for float64")
        if dtype not in DTYPES:
            raise BackendError(f"keras backend: unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        self.spec, self.dtype, self.device = spec, DTYPES[dtype], device
        self._dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        with jax.default_device(self._dev):
            self.net = Net(spec, dtype, seed)
        # Keras's variables are only keys here: their values live in these pytrees, threaded through the steps.
        weights = self.net.weights(trainable=True)
        self._keys, self._trainable = list(weights), list(weights.values())
        ids = {id(v) for v in self._trainable}
        self._others = [v for v in self.net.variables() if id(v) not in ids]
        position = {id(v): i for i, v in enumerate(self._others)}
        self._buffers = {k: position[id(v)] for k, v in self.net.weights(trainable=False).items()}
        assert set(self._keys) == set(spec.param_shapes()), sorted(self._keys)
        assert set(self._buffers) == set(spec.buffer_shapes()), sorted(self._buffers)
        self.params = self._put({k: v.value for k, v in weights.items()})
        self.state = jax.device_put([v.value for v in self._others], self._dev)  # seeds stay integers
        self.opt_state, self._step, self._masks = None, None, None
        self._forward = jax.jit(lambda p, s, x: self._apply(p, s, x, False, None, False)[0])
        self._grad = jax.jit(jax.value_and_grad(lambda p, s, x, y, m: self._loss(p, s, x, y, m, False),
                                                has_aux=True))
        if params is not None:
            self.set_params(params)

    def _apply(self, params: dict, state: list, x, training: bool, masks, update: bool):
        """Logits, and the variables besides the parameters as the layers left them (running statistics, seeds)."""
        mapping = [(v, params[k]) for k, v in zip(self._keys, self._trainable)] + list(zip(self._others, state))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logits = self.net(x, training=training, masks=masks, update=update)
        return logits, [scope.get_current_value(v) for v in self._others]

    def _loss(self, params, state, x, y, masks, update: bool):
        logits, state = self._apply(params, state, x, True, masks, update)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Highest matmul precision everywhere, as flax's; report x64."""
        jax.config.update("jax_default_matmul_precision", "highest")
        return {"matmul_precision": "highest", "x64_enabled": bool(jax.config.jax_enable_x64),
                "keras_backend": keras.backend.backend()}

    @classmethod
    def version(cls) -> str:
        """Versions of Keras and of the jax and optax it runs on."""
        return f"keras {keras.__version__} / jax {jax.__version__} / optax {optax.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """CPU, plus CUDA when jax sees a GPU."""
        return jax_device.devices()

    def _put(self, tree):
        return jax.device_put(jax.tree_util.tree_map(lambda v: np.asarray(v, self.dtype), tree), self._dev)

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return layout.from_channels_last(self.spec, {k: np.array(v) for k, v in self.params.items()})

    def set_params(self, params: Params) -> None:
        """Replace the parameters (cast to the backend dtype); optimizer state is kept."""
        check(self.spec, params)
        self.params = self._put(layout.to_channels_last(self.spec, params))

    def get_buffers(self) -> Params:
        """Batch norm's running statistics in canonical layout, as host copies; {} without batch norm."""
        native = {k: np.array(self.state[i]) for k, i in self._buffers.items()}
        return layout.from_channels_last(self.spec, native, "buffers")

    def set_buffers(self, buffers: Params) -> None:
        """Replace the running statistics."""
        check(self.spec, buffers, "buffers")
        state = list(self.state)
        for k, value in layout.to_channels_last(self.spec, buffers, "buffers").items():
            state[self._buffers[k]] = self._put(value)
        self.state = state

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: Keras's own seeded dropout."""
        self._masks = native_masks(self.spec, masks, lambda v: jax.device_put(v, self._dev))

    def _x(self, x: np.ndarray) -> jax.Array:
        # The one place inputs change layout: NCHW arrives, the network runs NHWC.
        return jax.device_put(layout.nchw_to_nhwc(np.asarray(x, self.dtype)), self._dev)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation-mode logits (N, classes) for NCHW input x, as a host array."""
        return np.array(self._forward(self.params, self.state, self._x(x)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers stay as they are."""
        x, y = self.prepare_batch(x, y)
        # The new state differs only in the dropout seeds (update=False): kept, so the next pass draws afresh.
        (loss, self.state), grads = self._grad(self.params, self.state, x, y, masks_for(self._masks, len(x)))
        return float(loss), layout.from_channels_last(self.spec, {k: np.array(g) for k, g in grads.items()})

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh optax state (flax's torch.optim rule) and the jitted train step that uses it."""
        tx = optax_rule.torch_rule(config, self.dtype, "keras")
        self.opt_state = jax.device_put(tx.init(self.params), self._dev)
        self._lr = self.dtype(config.lr)

        def step(params, opt_state, state, x, y, lr, masks):
            opt_state.hyperparams["learning_rate"] = lr
            (loss, state), grads = jax.value_and_grad(
                lambda p: self._loss(p, state, x, y, masks, True), has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, state, loss

        self._step = jax.jit(step, donate_argnums=(0, 1, 2))

    def set_lr(self, lr: float) -> None:
        """Set the injected learning rate for the next steps; moments are kept and nothing recompiles."""
        if self.opt_state is None:
            raise BackendError("keras backend: call init_optimizer() before set_lr()")
        self._lr = self.dtype(lr)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """NHWC x in the backend dtype and int32 labels, on the device."""
        return self._x(x), jax.device_put(np.asarray(y, np.int32), self._dev)

    def train_step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One jitted update; returns the loss as a device scalar."""
        if self._step is None:
            raise BackendError("keras backend: call init_optimizer() before training")
        x, y = batch
        self.params, self.opt_state, self.state, loss = self._step(
            self.params, self.opt_state, self.state, x, y, self._lr, masks_for(self._masks, len(x)))
        return loss

    def peak_device_memory(self) -> int | None:
        """XLA's peak_bytes_in_use on a GPU."""
        return jax_device.peak_memory(self.device, self._dev)

    def synchronize(self) -> None:
        """Block until the queued steps have produced the current parameters and state."""
        jax.block_until_ready((self.params, self.opt_state, self.state))

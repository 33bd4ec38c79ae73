"""The spec lowered to Keras 3 on TensorFlow: one tf.function step per batch, XLA-compiled, or many in one call."""
from __future__ import annotations

from typing import Any, ClassVar

from fwbench.backends import keras_setup

keras_setup.select("tensorflow", "fwbench's keras backend")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fwbench.backends import layout  # noqa: E402
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode  # noqa: E402
from fwbench.backends.engine import parallel  # noqa: E402
from fwbench.backends.keras_optim import NativeRule, TorchRule  # noqa: E402
from fwbench.backends.keras_net import Net, masks_for, native_masks  # noqa: E402
from fwbench.models.params import Params, check  # noqa: E402
from fwbench.models.spec import ModelSpec  # noqa: E402

DTYPES = {"float32": "float32", "float64": "float64"}


class KerasBackend(Backend):
    """Keras 3 layers on TensorFlow, NHWC inside, torch.optim's update rule in TF ops."""

    name = "keras"
    framework = "keras"
    UNSUPPORTED_LAYERS = frozenset()  # keras_layers.LAYERS covers every layer type
    modes = ("graph", "xla", "loop", "native")
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "graph": "stock Keras 3 layers on TensorFlow; one tf.function step per batch (forward, tf.GradientTape, "
                 "update); the update is torch.optim's rule in TF ops and batchnorm fwbench's layer with "
                 "PyTorch's running statistics",
        "xla": "graph with tf.function(jit_compile=True): the step compiled by XLA",
        "loop": "the epoch resident on the device and each stretch of steps one tf.function, a loop over its "
                "batches, as flax@scan does",
        "native": "graph with Keras's own keras.optimizers.SGD and Adam at the recipe's hyperparameters instead of "
                  "torch.optim's rule: Adam's epsilon before the bias correction, SGD's learning rate inside the "
                  "momentum buffer, the learning rate a float32 variable; it fails the conformance kit's update "
                  "rows, so the bench runs it only with --allow-nonconformant",
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Build the model; params=None asks for Keras's default init (Glorot uniform kernels, zeros), seeded."""
        check_device(type(self), device)
        self.mode = check_mode(type(self), mode)
        self.fused = self.mode == "loop"
        if dtype not in DTYPES:
            raise BackendError(f"keras backend: unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        self.spec, self.dtype, self.device = spec, dtype, device
        self._dev = "/GPU:0" if device == "cuda" else "/CPU:0"
        with tf.device(self._dev):
            self.net = Net(spec, dtype, seed)
        # The tf.Variables inside Keras's own, which the compiled steps read and assign.
        self.params = {k: v.value for k, v in self.net.weights(trainable=True).items()}
        self.buffers = {k: v.value for k, v in self.net.weights(trainable=False).items()}
        assert set(self.params) == set(spec.param_shapes()), sorted(self.params)
        assert set(self.buffers) == set(spec.buffer_shapes()), sorted(self.buffers)
        self.rule: TorchRule | NativeRule | None = None
        self._lr = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self._masks: dict | None = None
        self._grad = tf.function(self._loss_and_grads)
        if params is not None:
            self.set_params(params)

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """TF32 off, and threads set to the cores, before TensorFlow runs its first op."""
        tf.config.experimental.enable_tensor_float_32_execution(False)
        cores = parallel.cores()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(cores)
        except RuntimeError:  # the runtime is already up (an op ran first): its thread pools stay as they are
            pass
        # Op determinism stays off: it is process-wide, and with it keras@xla's max-pool gradient raised
        # UNIMPLEMENTED ("no deterministic XLA implementation"), on the CPU too; graph and loop passed the kit with it.
        # Without it, the kit's determinism rows still find the loss and gradients bit-identical on the CPU.
        return {"tf32": False, "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(), "op_determinism": False}

    @classmethod
    def version(cls) -> str:
        """Versions of Keras and the TensorFlow it runs on."""
        return f"keras {keras.__version__} / tensorflow {tf.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """CPU, plus CUDA when TensorFlow sees a GPU."""
        return ["cpu", "cuda"] if tf.config.list_physical_devices("GPU") else ["cpu"]

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return layout.from_channels_last(self.spec, {k: v.numpy() for k, v in self.params.items()})

    def set_params(self, params: Params) -> None:
        """Replace the parameters in place (cast to the backend dtype); optimizer state is kept."""
        check(self.spec, params)
        for k, value in layout.to_channels_last(self.spec, params).items():
            self.params[k].assign(np.asarray(value, self.dtype))

    def get_buffers(self) -> Params:
        """Batch norm's running statistics in canonical layout, as host copies; {} without batch norm."""
        return layout.from_channels_last(self.spec, {k: v.numpy() for k, v in self.buffers.items()}, "buffers")

    def set_buffers(self, buffers: Params) -> None:
        """Replace the running statistics in place."""
        check(self.spec, buffers, "buffers")
        for k, value in layout.to_channels_last(self.spec, buffers, "buffers").items():
            self.buffers[k].assign(np.asarray(value, self.dtype))

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: Keras's own seeded dropout."""
        self._masks = native_masks(self.spec, masks, tf.constant)

    def _x(self, x: np.ndarray) -> tf.Tensor:
        # The one place inputs change layout: NCHW arrives, the network runs NHWC.
        with tf.device(self._dev):
            return tf.constant(layout.nchw_to_nhwc(np.asarray(x, self.dtype)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation-mode logits (N, classes) for NCHW input x, as a host array."""
        return self.net(self._x(x), training=False).numpy()

    def _loss(self, x, y, masks, update: bool):
        logits = self.net(x, training=True, masks=masks, update=update)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    def _loss_and_grads(self, x, y, masks):
        variables = list(self.params.values())
        with tf.GradientTape() as tape:
            loss = self._loss(x, y, masks, update=False)
        return loss, tape.gradient(loss, variables)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers stay as they are."""
        x, y = self.prepare_batch(x, y)
        loss, grads = self._grad(x, y, masks_for(self._masks, len(x)))
        native = {k: g.numpy() for k, g in zip(self.params, grads)}
        return float(loss), layout.from_channels_last(self.spec, native)

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh optimizer state (torch.optim's rule in TF ops) and the compiled step that uses it."""
        with tf.device(self._dev):
            if self.mode == "native":
                self.rule = NativeRule(config, list(self.net.weights(trainable=True).values()))
            else:
                self.rule = TorchRule(config, list(self.params.values()))
        self._lr.assign(config.lr)
        jit = self.mode == "xla"
        self._step = tf.function(self._train_step, jit_compile=jit)
        self._loop = tf.function(self._train_loop)

    def _train_step(self, x, y, lr, masks):
        variables = list(self.params.values())
        with tf.GradientTape() as tape:
            loss = self._loss(x, y, masks, update=True)
        self.rule.apply(tape.gradient(loss, variables), lr)
        return loss

    def _train_loop(self, x, y, batches, lrs, masks):
        """Steps over batches (steps, size) of the resident x and y, at lrs; their losses."""
        losses = tf.TensorArray(x.dtype, size=tf.shape(batches)[0])
        for s in tf.range(tf.shape(batches)[0]):
            idx = batches[s]
            losses = losses.write(s, self._train_step(tf.gather(x, idx), tf.gather(y, idx), lrs[s], masks))
        return losses.stack()

    def set_lr(self, lr: float) -> None:
        """Set the learning rate for the next steps; the state is kept and nothing is traced again."""
        if self.rule is None:
            raise BackendError("keras backend: call init_optimizer() before set_lr()")
        self._lr.assign(lr)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """NHWC x in the backend dtype and int32 labels, on the device."""
        with tf.device(self._dev):
            return self._x(x), tf.constant(np.asarray(y, np.int32))

    def train_step(self, batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        """One compiled update; returns the loss as a tensor."""
        if self.rule is None:
            raise BackendError("keras backend: call init_optimizer() before training")
        x, y = batch
        return self._step(x, y, self._lr, masks_for(self._masks, len(x)))

    def prepare_epoch(self, x: np.ndarray, y: np.ndarray, order) -> Any:
        """loop: the epoch's images and labels resident on the device, and its batches; else a list of batches."""
        if not self.fused:
            return super().prepare_epoch(x, y, order)
        with tf.device(self._dev):
            return Epoch(self._x(x), tf.constant(np.asarray(y, np.int32)), [np.asarray(o, np.int32) for o in order])

    def train_steps(self, epoch: Any, start: int, stop: int, lrs) -> Any:
        """loop: steps start..stop-1 as one tf.function call per run of same-sized batches; host losses."""
        if not self.fused:
            return super().train_steps(epoch, start, stop, lrs)
        if self.rule is None:
            raise BackendError("keras backend: call init_optimizer() before training")
        if not 0 <= start <= stop <= len(epoch.order) or len(lrs) != stop - start:
            raise BackendError(f"keras backend: steps {start}..{stop} with {len(lrs)} learning rates do not fit "
                               f"an epoch of {len(epoch.order)} steps")
        losses, s = [], start
        while s < stop:  # the short last batch is a run of its own: its own shape, its own trace
            e = s
            while e < stop and len(epoch.order[e]) == len(epoch.order[s]):
                e += 1
            batches = tf.constant(np.stack(epoch.order[s:e]))
            rates = tf.constant(np.asarray(lrs[s - start:e - start], np.float64))
            masks = masks_for(self._masks, len(epoch.order[s]))
            losses.append(self._loop(epoch.x, epoch.y, batches, rates, masks).numpy())
            s = e
        return np.concatenate(losses) if losses else np.zeros(0, self.dtype)

    def synchronize(self) -> None:
        """TensorFlow's CPU ops have finished when they return; a read of one parameter waits for a GPU's."""
        next(iter(self.params.values())).numpy()


class Epoch:
    """An epoch resident on the device for the loop mode: NHWC images, labels, and each step's indices."""

    def __init__(self, x: tf.Tensor, y: tf.Tensor, order: list[np.ndarray]):
        self.x, self.y, self.order = x, y, order

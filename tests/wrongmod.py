"""Backends wrong on purpose, each in one way, for the conformance kit's tests, and the rows each must fail.

A module of its own, so that the pytest plugin's subprocess loads them by module:Class path too (wrongmod:NAME)."""
import numpy as np

from fwbench.backends.base import Backend, BackendError
from fwbench.backends.engine import Tensor
from fwbench.backends.numpy_backend import NumpyBackend, Pass


class ScaledConvGrad(NumpyBackend):
    """Every conv weight gradient FACTOR times the right one: 10% too large."""
    FACTOR = 1.1

    def loss_and_grads(self, x, y):
        loss, grads = super().loss_and_grads(x, y)
        for i, layer in enumerate(self.spec.layers):
            if layer.type == "conv2d":
                grads[f"{i}.weight"] = grads[f"{i}.weight"] * self.FACTOR
        return loss, grads


class TransposedDense(NumpyBackend):
    """get_params hands dense weights back as (out, in), torch's native layout."""
    def get_params(self):
        return {k: v.T.copy() if v.ndim == 2 else v for k, v in super().get_params().items()}


class NoOptimizers(NumpyBackend):
    """Everything but optimizers, which raise the base class's NotImplementedError."""
    def init_optimizer(self, config):
        Backend.init_optimizer(self, config)


class NoGradients(NumpyBackend):
    """Refuses the one thing every backend must do."""
    def loss_and_grads(self, x, y):
        return Backend.loss_and_grads(self, x, y)


class Float32Only(NumpyBackend):
    """Refuses float64."""
    def __init__(self, spec, params=None, *, device="cpu", dtype="float32", seed=0):
        if dtype != "float32":
            raise BackendError(f"backend 'float32only' supports only float32, not {dtype}")
        super().__init__(spec, params, device=device, dtype=dtype, seed=seed)


class CrashingForward(NumpyBackend):
    """forward() has a bug."""
    def forward(self, x):
        return 1 / 0


class AnyDevice(NumpyBackend):
    """Does not check the device, and falls over on it with the wrong exception."""
    def __init__(self, spec, params=None, *, device="cpu", dtype="float32", seed=0):
        {"cpu": 0}[device]
        super().__init__(spec, params, device=device, dtype=dtype, seed=seed)


class SkipsLastStep(NumpyBackend):
    """A fused train_steps that forgets the short last batch of an epoch."""
    fused = True

    def train_steps(self, epoch, start, stop, lrs):
        return super().train_steps(epoch, start, min(stop, len(epoch) - 1), lrs[:len(epoch) - 1 - start])


class Moded(NumpyBackend):
    """Has modes and remembers the one each instance was built in."""
    modes = ("plain", "fancy")
    built = []

    def __init__(self, *args, mode=None, **kwargs):
        Moded.built.append(mode)
        super().__init__(*args, **kwargs)


class BiasedRunningVar(NumpyBackend):
    """Updates batch norm's running variance with the biased batch variance, as a hand-written norm might."""
    def train_step(self, batch):
        before = self.get_buffers()
        loss = super().train_step(batch)
        for i, layer in enumerate(self.spec.layers):
            if layer.type == "batchnorm":
                count = len(batch[0]) * int(np.prod(self.spec.input_of(i)[1:]))
                old, new = before[f"{i}.running_var"], self.buffers[f"{i}.running_var"]
                kept = (1 - layer.momentum) * old
                new[...] = kept + (new - kept) * (count - 1) / count  # momentum * var * count / (count - 1) undone
        return loss


class IgnoresMasks(NumpyBackend):
    """Accepts the harness's dropout masks and draws its own anyway."""
    def set_masks(self, masks):
        pass


class BatchStatsForward(NumpyBackend):
    """forward() normalises with the batch's statistics, as a model left in training mode does."""
    def forward(self, x):
        if not any(layer.type == "batchnorm" for layer in self.spec.layers):
            return super().forward(x)
        return self._logits(self.xp.asarray(x, dtype=self.dtype), Pass(True, self.buffers)).data.copy()


class StatefulLossAndGrads(NumpyBackend):
    """loss_and_grads updates the running statistics, as a train step does."""
    def loss_and_grads(self, x, y):
        loss = self._gradients(*self.prepare_batch(x, y), update=True)
        return float(loss), {k: g.copy() for k, g in zip(self.params, self.grad_views)}


class AliasedBuffers(NumpyBackend):
    """get_buffers hands out its live arrays instead of copies."""
    def get_buffers(self):
        return dict(self.buffers)


class NoBatchNorm(NumpyBackend):
    """Lowers every layer type but batch norm, and says so."""
    UNSUPPORTED_LAYERS = frozenset({"batchnorm"})

    def __init__(self, spec, *args, **kwargs):
        if any(layer.type == "batchnorm" for layer in spec.layers):
            raise BackendError("backend 'numpy' has no lowering for batchnorm")
        super().__init__(spec, *args, **kwargs)


class NoisyZeroGrad(NumpyBackend):
    """Rounding noise of SCALE times the largest gradient in the gradients that are zero in exact arithmetic."""
    SCALE = 0.0

    def loss_and_grads(self, x, y):
        loss, grads = super().loss_and_grads(x, y)
        largest = max(np.linalg.norm(g) for g in grads.values())
        for i, layer in enumerate(self.spec.layers[1:], 1):
            if layer.type == "batchnorm":  # the bias of the conv or dense layer in front of it
                bias = grads[f"{i - 1}.bias"]
                unit = np.linspace(-1, 1, bias.size) / np.linalg.norm(np.linspace(-1, 1, bias.size))
                grads[f"{i - 1}.bias"] = bias + self.SCALE * largest * unit
        return loss, grads


class LrInsideMomentum(NumpyBackend):
    """SGD with momentum as Keras writes it, v = momentum * v - lr * g; p += v: torch's steps while lr is constant."""
    def init_optimizer(self, config):
        super().init_optimizer(config)
        if config.name == "sgd":
            self.optimizer = KerasSGD(self.flat, config.lr, config.momentum)


class KerasSGD:
    """The learning rate inside the momentum buffer: the same steps as torch's while it is constant."""
    def __init__(self, flat, lr, momentum):
        self.flat, self.lr, self.momentum, self.velocity = flat, lr, momentum, np.zeros_like(flat)

    def step(self, grads):
        self.velocity *= self.momentum
        self.velocity -= self.lr * grads[0]
        self.flat += self.velocity


class Float32LearningRate(NumpyBackend):
    """Keeps the learning rate as a float32 scalar, as a framework that holds it in a float32 variable does."""
    def init_optimizer(self, config):
        super().init_optimizer(config)
        self.set_lr(config.lr)

    def set_lr(self, lr):
        super().set_lr(np.float32(lr))


def hwc_flatten(h, i, layer, w, b, run):
    """The engine's channels-last map flattened as it lies, in H, W, C order."""
    if h.data.ndim == 2:
        return h
    out = Tensor(h.data.reshape(h.shape[0], -1), _prev=(h,), _op="flatten")

    def _backward(g):
        if h.requires_grad:
            h.accumulate(g.reshape(h.shape))
    out._backward = _backward
    return out


class ChannelsLastFlatten(NumpyBackend):
    """Flattens in H, W, C order and forgets to permute the rows of the dense layer after it."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._steps = [(hwc_flatten if layer.type == "flatten" else op, i, layer, w, b)
                       for op, i, layer, w, b in self._steps]


class ChannelsLastFlattenAnyDevice(ChannelsLastFlatten, AnyDevice):
    """The flatten of one and the device check of the other: two unrelated mistakes."""


class NoisyGrads(NumpyBackend):
    """Gradients that differ between calls, by SCALE relative (atomics on a GPU, say)."""
    SCALE = 1e-13

    def loss_and_grads(self, x, y):
        loss, grads = super().loss_and_grads(x, y)
        self.calls = getattr(self, "calls", 0) + 1
        return loss, {k: g * (1 + self.SCALE * self.calls) for k, g in grads.items()}


# The rows whose gradients pass through a conv weight: every case with a conv, and the models.
SCALED_CONV_FAILS = {"backward/conv2d 3x3", "backward/conv2d 3x3 stride 2 padding 1",
                     "backward/conv2d 2x2 stride 3 padding 2", "backward/conv2d 3x3 same",
                     "backward/conv2d 4x4 stride 2 same (asymmetric)", "backward/relu", "backward/tanh",
                     "backward/sigmoid", "backward/maxpool2d 2", "backward/maxpool2d 3 stride 2 (overlapping)",
                     "backward/avgpool2d 2", "backward/avgpool2d 3 stride 2 (overlapping)",
                     "backward/batchnorm (C, H, W)", "backward/dropout 0.5", "model/tinycnn", "model/cnn"}
BATCHNORM_CASES, DROPOUT_CASES = ("batchnorm (C, H, W)", "batchnorm (F)"), ("dropout 0.5",)
# The rows that need an optimizer, which NoOptimizers refuses.
SGD_SET_LR = "optimizer/sgd momentum with set_lr"
OPTIMIZER_ROWS = {"optimizer/sgd momentum 0.9", "optimizer/adam", "optimizer/set_lr keeps state", SGD_SET_LR,
                  "training/an epoch through train_steps", "training/tinycnn loss falls",
                  *[f"state/{case}: training steps" for case in BATCHNORM_CASES + DROPOUT_CASES]}

"""The spec as a flax.linen module over NHWC batches, its loss, and its parameters to and from the canonical layout."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fwbench.backends import flax_kernels, layout
from fwbench.backends.lowering import lower
from fwbench.models.params import Params
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ModelSpec, ReLU,
                                 Sigmoid, Tanh)

# Canonical suffix -> flax's name for it (batch norm's weight is "scale"); the buffers live in "batch_stats".
NATIVE = {"weight": "kernel", "bias": "bias", "running_mean": "mean", "running_var": "var"}
CANONICAL = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# XLA may compute float32 convs/matmuls in TF32 or bf16 passes on GPU; HIGHEST pins full float32,
# matching torch with allow_tf32 off. It is set per layer, so no global jax config changes.
PRECISION = jax.lax.Precision.HIGHEST


class Run(NamedTuple):
    """How one pass of Net runs: training or evaluation, and where dropout's keep-masks come from."""
    train: bool
    masks: dict | None  # "layer_i" -> NHWC keep-mask from the harness; None: nn.Dropout draws from the "dropout" rng


class Noise(NamedTuple):
    """What dropout uses in one training step: the harness's masks, or the step count folded into the backend's key."""
    masks: dict | None = None
    key: jax.Array | None = None
    tick: Any = None  # int32 count of the training passes before this one

    def later(self, steps):
        """The noise of the training pass `steps` passes on: the same masks, or the count advanced."""
        return self if self.tick is None else self._replace(tick=self.tick + steps)

    def rngs(self) -> dict:
        """flax's rngs argument: a fresh dropout key per pass, as flax users fold the step into theirs."""
        return {} if self.tick is None else {"dropout": jax.random.fold_in(self.key, self.tick)}


NO_NOISE = Noise()  # a spec without dropout: nothing to pass, nothing drawn


class TorchBatchNorm(nn.Module):
    """Batch norm over the last axis with PyTorch's statistics, which nn.BatchNorm does not follow.

    Training normalises with the batch mean and biased variance and updates running = (1 - m) running + m batch
    with the unbiased variance; nn.BatchNorm updates with the biased one and calls 1 - m its momentum."""
    momentum: float
    epsilon: float
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        c, axes = x.shape[-1], tuple(range(x.ndim - 1))
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(c, self.param_dtype))
        var = self.variable("batch_stats", "var", lambda: jnp.ones(c, self.param_dtype))
        if train:
            count = x.size // c  # values per channel
            if count < 2:
                raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                                 "use a batch of 2 or more")
            mu = x.mean(axis=axes)
            centred = x - mu
            sigma2 = (centred * centred).mean(axis=axes)
            # Only a training step's apply makes batch_stats mutable; loss_and_grads leaves them as they are.
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                m = self.momentum
                mean.value = (1 - m) * mean.value + m * mu
                var.value = (1 - m) * var.value + m * sigma2 * (count / (count - 1))
        else:
            sigma2, centred = var.value, x - mean.value
        return centred * (1 / jnp.sqrt(sigma2 + self.epsilon)) * scale + bias


def _conv(x, layer: Conv2D, net: Net, kw: dict, run: Run):
    k, s = layer.kernel_size, layer.stride
    top, bottom, left, right = layer.pads((x.shape[3], x.shape[1], x.shape[2]))  # "same" may pad unevenly
    # None is nn.Conv's own default, lax.conv_general_dilated.
    conv = flax_kernels.conv_general_dilated if net.kernels else None
    return nn.Conv(layer.out_channels, (k, k), strides=(s, s), padding=[(top, bottom), (left, right)],
                   conv_general_dilated=conv, **kw)(x)


def _max_pool(x, layer: MaxPool2D, net: Net, kw: dict, run: Run):
    size, step = layer.size, layer.step
    return flax_kernels.max_pool(x, size, step) if net.kernels else nn.max_pool(x, (size, size), strides=(step, step))


def _batchnorm(x, layer: BatchNorm, net: Net, kw: dict, run: Run):
    return TorchBatchNorm(layer.momentum, layer.eps, kw["param_dtype"], name=kw["name"])(x, run.train)


def _dropout(x, layer: Dropout, net: Net, kw: dict, run: Run):
    if not run.train or run.masks is None:
        return nn.Dropout(layer.rate, name=kw["name"])(x, deterministic=not run.train)
    # The harness's units, scaled as the engine and PyTorch do: the scaled mask first, one product after.
    keep = run.masks[kw["name"]]
    return x * (keep.astype(x.dtype) / jnp.asarray(1 - layer.rate, x.dtype))


# Layer type -> op(x, layer, net, kw, run) on an NHWC batch; kw holds a submodule's dtypes, precision and name
# "layer_i", run says training or evaluation.
LAYERS: dict[type, Callable] = {
    Conv2D: _conv,
    ReLU: lambda x, layer, net, kw, run: nn.relu(x),
    MaxPool2D: _max_pool,
    # H, W, C order: layout.py permutes what reads it (the next dense's rows, batch norm's vectors, masks).
    Flatten: lambda x, layer, net, kw, run: x.reshape((x.shape[0], -1)),
    Dense: lambda x, layer, net, kw, run: nn.Dense(layer.units, **kw)(x),
    Tanh: lambda x, layer, net, kw, run: nn.tanh(x),
    Sigmoid: lambda x, layer, net, kw, run: nn.sigmoid(x),
    AvgPool2D: lambda x, layer, net, kw, run: nn.avg_pool(x, (layer.size, layer.size),
                                                          strides=(layer.step, layer.step), padding="VALID"),
    BatchNorm: _batchnorm,
    Dropout: _dropout,
}


class Net(nn.Module):
    """The spec's layers over an NHWC batch; layer i's parameters (and batch_stats) live in submodule "layer_i"."""
    spec: ModelSpec
    dtype: Any = jnp.float32
    kernels: bool = False  # fwbench's custom VJPs for conv and pool (flax_kernels.py) instead of flax's stock ops

    @nn.compact
    def __call__(self, x, train: bool = False, masks: dict | None = None):
        run = Run(train, masks)
        for i, (op, layer) in enumerate(zip(lower(LAYERS, self.spec, "flax"), self.spec.layers)):
            kw = dict(dtype=self.dtype, param_dtype=self.dtype, precision=PRECISION, name=f"layer_{i}")
            x = op(x, layer, self, kw, run)
        return x


def to_native(spec: ModelSpec, values: Params, what: str = "parameters") -> dict:
    """Canonical -> flax tree {"layer_i": {"kernel", "bias"}} in channels-last layout (what="buffers": batch_stats)."""
    tree: dict = {}
    for key, value in layout.to_channels_last(spec, values, what).items():
        i, kind = key.split(".")
        name = "scale" if kind == "weight" and isinstance(spec.layers[int(i)], BatchNorm) else NATIVE[kind]
        tree.setdefault(f"layer_{i}", {})[name] = value
    return tree


def from_native(spec: ModelSpec, tree: dict, what: str = "parameters") -> Params:
    """Flax tree -> canonical; the same for parameters and gradients (what="buffers": batch_stats)."""
    flat = {f"{name.removeprefix('layer_')}.{CANONICAL[k]}": np.array(v)
            for name, sub in tree.items() for k, v in sub.items()}
    return layout.from_channels_last(spec, flat, what)


def variables(params, stats) -> dict:
    """flax's variables of a Net: its parameters, and its batch_stats where it has any."""
    # A spec without batch norm has no batch_stats collection, and its programs stay as they were.
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def loss(model: Net, params, stats, x, y, noise: Noise, update: bool):
    """Training-mode mean cross-entropy, and the batch_stats: updated when `update`, else as given."""
    if update and stats:
        logits, state = model.apply(variables(params, stats), x, True, noise.masks, rngs=noise.rngs(),
                                    mutable=["batch_stats"])
        stats = state["batch_stats"]
    else:
        logits = model.apply(variables(params, stats), x, True, noise.masks, rngs=noise.rngs())
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), stats

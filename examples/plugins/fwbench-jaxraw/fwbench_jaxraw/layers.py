"""The spec's layers, the loss and a seeded init on raw jax.lax, in fwbench's canonical layout."""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fwbench.backends.lowering import lower
from fwbench.models.params import fan_in
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ModelSpec, ReLU,
                                 Sigmoid, Tanh)

# XLA may run float32 convs and matmuls as TF32 or bf16 passes on a GPU; HIGHEST keeps full float32.
PRECISION = lax.Precision.HIGHEST
# Activations stay NCHW and conv kernels OIHW, so canonical parameters need no transposes at all;
# flattening NCHW gives C, H, W order, which is the order canonical dense weights expect.
CONV_DIMS = ("NCHW", "OIHW", "NCHW")


@dataclass
class Pass:
    """One forward pass: training or evaluation, batch norm's running statistics, dropout's keep-masks."""
    training: bool
    buffers: dict       # "{i}.running_mean" / "{i}.running_var"; a training pass replaces them with updated ones
    masks: dict | None  # "{i}.mask" -> bool keep-mask, one per dropout layer; read in training only


def conv2d(x, w, b, stride: int, pads: tuple[int, int, int, int]):
    """Cross-correlation of an NCHW batch with an OIHW kernel, zero pads (top, bottom, left, right), plus a bias."""
    top, bottom, left, right = pads
    y = lax.conv_general_dilated(x, w, (stride, stride), [(top, bottom), (left, right)],
                                 dimension_numbers=CONV_DIMS, precision=PRECISION)
    return y + b[None, :, None, None]


def relu(x):
    """max(x, 0) with relu'(0) = 0."""
    # jnp.maximum(x, 0) would split the gradient of a tie, giving relu'(0) = 0.5; where() sends it all
    # to the constant branch, fwbench's convention.
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def maxpool2d(x, size: int, step: int):
    """Max over size x size windows every step pixels, VALID (windows may overlap)."""
    # reduce_window's max gradient goes to the first maximum of a tied window, as in the other backends.
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, size, size), (1, 1, step, step), "VALID")


def avgpool2d(x, size: int, step: int):
    """Mean over size x size windows every step pixels, VALID: the window's sum divided by its size."""
    # A concrete zero (not a traced one) lets JAX see the window sum it knows how to differentiate.
    total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1, 1, size, size), (1, 1, step, step), "VALID")
    return total / (size * size)


def dense(x, w, b):
    """x @ w + b with w stored (in, out)."""
    return jnp.matmul(x, w, precision=PRECISION) + b


def batchnorm(x, gamma, beta, i: int, layer: BatchNorm, run: Pass):
    """Per channel of NCHW x (per feature of (N, F) x): batch statistics in training, running ones in evaluation."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean_key, var_key = f"{i}.running_mean", f"{i}.running_var"
    if run.training:
        count = x.size // x.shape[1]  # values per channel; shapes are static, so this is a Python int
        if count < 2:
            raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                             "use a batch of 2 or more")
        mean = x.mean(axis=axes)
        centred = x - mean.reshape(shape)
        var = (centred * centred).mean(axis=axes)  # biased: what the batch is normalised with
        # PyTorch's momentum: running = (1 - m) running + m batch, with the unbiased variance there.
        m = layer.momentum
        run.buffers[mean_key] = (1 - m) * run.buffers[mean_key] + m * lax.stop_gradient(mean)
        run.buffers[var_key] = (1 - m) * run.buffers[var_key] + m * lax.stop_gradient(var) * (count / (count - 1))
    else:
        mean, var = run.buffers[mean_key], run.buffers[var_key]
        centred = x - mean.reshape(shape)
    xhat = centred * (1 / jnp.sqrt(var + layer.eps)).reshape(shape)
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


def dropout(x, i: int, layer: Dropout, run: Pass):
    """Inverted dropout in training (kept units scaled by 1 / (1 - rate)); the identity in evaluation."""
    if not run.training or not layer.rate:
        return x
    # The scaled mask first and one product after, as PyTorch computes it (and so fwbench's engine).
    scale = run.masks[f"{i}.mask"].astype(x.dtype) / (1 - layer.rate)
    return x * scale


# Layer type -> op(x, i, layer, w, b, run): layer i of the spec, its parameters w and b (None for a layer without)
# and the Pass. fwbench's layer types each need one entry; lower() refuses a spec with a type missing here, naming
# the layer.
LAYERS = {
    Conv2D: lambda x, i, layer, w, b, run: conv2d(x, w, b, layer.stride, layer.pads(x.shape[1:])),
    ReLU: lambda x, i, layer, w, b, run: relu(x),
    MaxPool2D: lambda x, i, layer, w, b, run: maxpool2d(x, layer.size, layer.step),
    Flatten: lambda x, i, layer, w, b, run: x.reshape(x.shape[0], -1),
    Dense: lambda x, i, layer, w, b, run: dense(x, w, b),
    Tanh: lambda x, i, layer, w, b, run: jnp.tanh(x),
    Sigmoid: lambda x, i, layer, w, b, run: jax.nn.sigmoid(x),
    AvgPool2D: lambda x, i, layer, w, b, run: avgpool2d(x, layer.size, layer.step),
    BatchNorm: lambda x, i, layer, w, b, run: batchnorm(x, w, b, i, layer, run),
    Dropout: lambda x, i, layer, w, b, run: dropout(x, i, layer, run),
}


def apply(spec: ModelSpec, params: dict, buffers: dict, x, training: bool = False, masks: dict | None = None):
    """Logits (N, classes) for an NCHW batch, and the buffers after the pass (updated only in training)."""
    # A fresh dict: batch norm writes its new statistics into the Pass, never into the caller's buffers.
    run = Pass(training, dict(buffers), masks)
    for i, (op, layer) in enumerate(zip(lower(LAYERS, spec, "jaxraw"), spec.layers)):
        x = op(x, i, layer, params.get(f"{i}.weight"), params.get(f"{i}.bias"), run)
    return x, run.buffers


def evaluate(spec: ModelSpec, params: dict, buffers: dict, x):
    """Logits in evaluation mode: running statistics, no dropout."""
    return apply(spec, params, buffers, x)[0]


def draw_masks(spec: ModelSpec, key, batch: int) -> dict:
    """Keep-masks for every dropout layer from a jax.random key, "{i}.mask" -> bool (batch, *input of layer i)."""
    return {f"{i}.mask": jax.random.bernoulli(jax.random.fold_in(key, i), 1 - layer.rate, (batch, *spec.input_of(i)))
            for i, layer in enumerate(spec.layers) if isinstance(layer, Dropout)}


def cross_entropy(logits, y):
    """Mean softmax cross-entropy against integer labels, written out by hand."""
    # Shifting by the row max keeps exp() from overflowing; the shift cancels in the gradient,
    # so stop_gradient only saves work (and keeps max's tie rule out of it).
    z = logits - lax.stop_gradient(logits.max(axis=1, keepdims=True))
    log_sum_exp = jnp.log(jnp.exp(z).sum(axis=1))
    picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
    return (log_sum_exp - picked).mean()


def loss(spec: ModelSpec, seed: int, params: dict, buffers: dict, x, y, masks: dict | None, count):
    """Mean cross-entropy of a training pass and the updated buffers; masks None: drawn from (seed, count)."""
    if masks is None:
        # The backend's own dropout, as its users would have it: a fresh draw for each training pass.
        masks = draw_masks(spec, jax.random.fold_in(jax.random.PRNGKey(seed), count), x.shape[0])
    logits, buffers = apply(spec, params, buffers, x, training=True, masks=masks)
    return cross_entropy(logits, y), buffers


def check_layers(spec: ModelSpec) -> None:
    """Raise BackendError, naming the layer, if the spec has a layer type this backend cannot lower."""
    lower(LAYERS, spec, "jaxraw")


def init(spec: ModelSpec, seed: int, dtype) -> dict:
    """jax.random's own draw of torch's defaults: U(+-1/sqrt(fan_in)), batch norm's gamma 1 and beta 0."""
    shapes = spec.param_shapes()
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    out = {}
    for key, (name, shape) in zip(keys, shapes.items()):
        if isinstance(spec.layers[int(name.split(".")[0])], BatchNorm):
            out[name] = (jnp.ones if name.endswith(".weight") else jnp.zeros)(shape, dtype)
            continue
        bound = 1.0 / math.sqrt(fan_in(shapes[name.replace(".bias", ".weight")]))
        out[name] = jax.random.uniform(key, shape, dtype, -bound, bound)
    return out

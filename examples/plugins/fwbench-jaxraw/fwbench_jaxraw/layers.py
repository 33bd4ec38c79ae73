"""The spec's layers, the loss and a seeded init on raw jax.lax, in fwbench's canonical layout."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from fwbench.backends.lowering import lower
from fwbench.models.params import fan_in
from fwbench.models.spec import Conv2D, Dense, Flatten, MaxPool2D, ModelSpec, ReLU, Sigmoid, Tanh

# XLA may run float32 convs and matmuls as TF32 or bf16 passes on a GPU; HIGHEST keeps full float32.
PRECISION = lax.Precision.HIGHEST
# Activations stay NCHW and conv kernels OIHW, so canonical parameters need no transposes at all;
# flattening NCHW gives C, H, W order, which is the order canonical dense weights expect.
CONV_DIMS = ("NCHW", "OIHW", "NCHW")


def conv2d(x, w, b, stride: int, padding: int):
    """Cross-correlation of an NCHW batch with an OIHW kernel, plus a per-channel bias."""
    y = lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
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


def dense(x, w, b):
    """x @ w + b with w stored (in, out)."""
    return jnp.matmul(x, w, precision=PRECISION) + b


# Layer type -> op(x, layer, w, b), w and b the layer's parameters (None for a layer without): fwbench's
# layer types each need one entry; lower() refuses a spec with a type missing here, naming the layer.
LAYERS = {
    Conv2D: lambda x, layer, w, b: conv2d(x, w, b, layer.stride, layer.padding),
    ReLU: lambda x, layer, w, b: relu(x),
    MaxPool2D: lambda x, layer, w, b: maxpool2d(x, layer.size, layer.step),
    Flatten: lambda x, layer, w, b: x.reshape(x.shape[0], -1),
    Dense: lambda x, layer, w, b: dense(x, w, b),
    Tanh: lambda x, layer, w, b: jnp.tanh(x),
    Sigmoid: lambda x, layer, w, b: jax.nn.sigmoid(x),
}


def apply(spec: ModelSpec, params: dict, x):
    """Logits (N, classes) for an NCHW batch."""
    for i, (op, layer) in enumerate(zip(lower(LAYERS, spec, "jaxraw"), spec.layers)):
        x = op(x, layer, params.get(f"{i}.weight"), params.get(f"{i}.bias"))
    return x


def cross_entropy(logits, y):
    """Mean softmax cross-entropy against integer labels, written out by hand."""
    # Shifting by the row max keeps exp() from overflowing; the shift cancels in the gradient,
    # so stop_gradient only saves work (and keeps max's tie rule out of it).
    z = logits - lax.stop_gradient(logits.max(axis=1, keepdims=True))
    log_sum_exp = jnp.log(jnp.exp(z).sum(axis=1))
    picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
    return (log_sum_exp - picked).mean()


def loss(spec: ModelSpec, params: dict, x, y):
    """Mean cross-entropy of the model on one batch."""
    return cross_entropy(apply(spec, params, x), y)


def check_layers(spec: ModelSpec) -> None:
    """Raise BackendError, naming the layer, if the spec has a layer type this backend cannot lower."""
    lower(LAYERS, spec, "jaxraw")


def init(spec: ModelSpec, seed: int, dtype) -> dict:
    """jax.random's own draw of torch's default scheme, U(+-1/sqrt(fan_in)): not the canonical numbers."""
    shapes = spec.param_shapes()
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    out = {}
    for key, (name, shape) in zip(keys, shapes.items()):
        bound = 1.0 / math.sqrt(fan_in(shapes[name.replace(".bias", ".weight")]))
        out[name] = jax.random.uniform(key, shape, dtype, -bound, bound)
    return out

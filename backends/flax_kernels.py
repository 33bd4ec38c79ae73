"""Exact custom gradients for the two ops XLA's CPU backend compiles poorly: conv weights and max pooling.

Measured with jax 0.10 on a CPU: inside a lax.scan, XLA emits the weight gradient of an NHWC
convolution with its naive loop emitter (about 18x slower than outside a loop), and max pooling's
select-and-scatter backward is most of a cnn step in either mode. Both rewrites compute the same
numbers: the weight gradient is the same convolution, arranged the way XLA hands it to Eigen, and
the pooling gradient goes to the first maximum of each window, the rule torch and XLA both follow.

Only the flax backend's "-tuned" modes use them; its stock modes keep flax's own ops, as a flax user would.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, stride, padding, precision):
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC, precision=precision)


def _conv_fwd(x, w, stride, padding, precision):
    return _conv(x, w, stride, padding, precision), (x, w)


def _conv_bwd(stride, padding, precision, res, dy):
    x, w = res
    _, data_vjp = jax.vjp(lambda x_: lax.conv_general_dilated(
        x_, w, stride, padding, dimension_numbers=NHWC, precision=precision), x)
    dx, = data_vjp(dy)  # XLA drops it where nobody uses it, as for the input images
    kh, kw = w.shape[:2]
    # dW[i, j, c, o] = sum over n, y, x of xpad[n, s*y + i, s*x + j, c] * dy[n, y, x, o]: a convolution of
    # x (channels as the batch, the batch as features) with dy (dilated by the stride) as its kernel.
    xpad = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    dw = lax.conv_general_dilated(jnp.transpose(xpad, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)),
                                  (1, 1), "VALID", rhs_dilation=stride, dimension_numbers=NHWC, precision=precision)
    return dx, jnp.transpose(dw[:, :kh, :kw, :], (1, 2, 0, 3))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """lax.conv_general_dilated for nn.Conv: the plain NHWC case gets the rewritten weight gradient."""
    plain = (feature_group_count == 1 and lhs.ndim == 4
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
             and batch_group_count == 1 and preferred_element_type is None
             and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation)))
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count,
                                        precision, preferred_element_type)
    if isinstance(padding, str):  # "VALID" or "SAME", as explicit pads of the NHWC spatial axes
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool(x, size):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, size, size, 1), (1, size, size, 1), "VALID")


def _pool_fwd(x, size):
    return _pool(x, size), x


def _pool_bwd(size, x, dy):
    n, h, w, c = x.shape
    ho, wo = h // size, w // size
    tiles = x[:, :ho * size, :wo * size].reshape(n, ho, size, wo, size, c).transpose(0, 1, 3, 5, 2, 4)
    first = jnp.argmax(tiles.reshape(n, ho, wo, c, size * size), axis=-1)  # argmax takes the first maximum
    hit = first[..., None] == jnp.arange(size * size)
    dtiles = jnp.where(hit, dy[..., None], 0).reshape(n, ho, wo, c, size, size).transpose(0, 1, 4, 2, 5, 3)
    dx = dtiles.reshape(n, ho * size, wo * size, c)
    return (jnp.pad(dx, ((0, 0), (0, h - ho * size), (0, w - wo * size), (0, 0))),)


_pool.defvjp(_pool_fwd, _pool_bwd)


def max_pool(x, size: int, step: int):
    """Max pooling over NHWC x; non-overlapping windows (size == step) get the argmax backward."""
    if size != step:
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, size, size, 1), (1, step, step, 1), "VALID")
    return _pool(x, size)

"""Batch normalisation and dropout: the two layers that behave differently in training and in evaluation."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of


def batchnorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, running: tuple[np.ndarray, np.ndarray],
              training: bool, momentum: float | None = None) -> Tensor:
    """Per channel of NHWC x (per feature of (N, F) x); batch statistics in training, else the running ones.

    running is (mean, var). With a momentum, training also updates them in place, as PyTorch does:
    running = (1 - momentum) running + momentum batch, the variance unbiased there though biased in the output."""
    xp = module_of(x.data)
    count = x.data.size // x.shape[-1]  # values per channel
    # Each image is one row, and a per-channel vector is tiled along it: broadcast along the channel axis alone,
    # NumPy loops over runs of C values, 2.5x slower (tgmnist's first batch norm: 0.39 against 0.16 ms a pass).
    # Every pass runs in this thread: on the workers, half the images each, forward and backward of a 64 x 14 x 14 x
    # 32 batch took 1.7-2.3 and 1.4-2.1 ms against 0.6-0.9 and 1.0-1.6 here, and a step of tgmnist 1.05x, of a
    # strided-conv spec with batch norm 1.13x as long (8 alternating rounds).
    n, reps = x.shape[0], count // x.shape[0]
    rows = x.data.reshape(n, -1)
    centred = xp.empty_like(rows)

    def tile(v):
        return xp.tile(v, reps)
    if training and count < 2:
        raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                         "use a batch of 2 or more")
    per = x.dtype.type(1 / count)
    mu, var = (channel_sum(x.data) * per, None) if training else running
    minus = tile(mu)
    xp.subtract(rows, minus, out=centred)
    if training:
        # The mean once more, of what is left: float32's rounding of the first one (~1e-6 relative) moved every
        # gradient of tgmnist by 1e-5 (float64 sums throughout: 1e-6, at ten times the time).
        shift = channel_sum(centred.reshape(x.shape)) * per
        mu += shift
        squares = xp.empty_like(centred)
        centred -= tile(shift)
        xp.multiply(centred, centred, out=squares)
        var = channel_sum(squares.reshape(x.shape)) * per
        del squares
        if momentum is not None:
            running[0][...] = (1 - momentum) * running[0] + momentum * mu
            running[1][...] = (1 - momentum) * running[1] + momentum * var * (count / (count - 1))
    inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat, y = centred, xp.empty_like(centred)  # centred is not needed again
    times, gain, bias = tile(inv_std), tile(gamma.data), tile(beta.data)
    xhat *= times
    xp.multiply(xhat, gain, out=y)
    y += bias
    out = Tensor(y.reshape(x.shape), _prev=(x, gamma, beta), _op="batchnorm")

    def _backward(g):
        g = xp.ascontiguousarray(g).reshape(n, -1)
        g_xhat = xp.empty_like(g)
        xp.multiply(g, xhat, out=g_xhat)
        dbeta, dgamma = channel_sum(g.reshape(x.shape)), channel_sum(g_xhat.reshape(x.shape))
        if beta.requires_grad:
            beta.accumulate(dbeta)
        if gamma.requires_grad:
            gamma.accumulate(dgamma)
        if x.requires_grad:
            scale = gamma.data * inv_std
            dx = g_xhat  # its products are summed: the buffer is free
            # The statistics depend on x too: dx = scale (g - mean(g) - xhat mean(g xhat)), as torch writes it,
            # with the channel means taken from the sums above.
            times, slope, offset = tile(scale), tile(scale * dgamma * per), tile(scale * dbeta * per)
            xp.multiply(g, times, out=dx)
            if training:
                dx -= xhat * slope
                dx -= offset
            x.accumulate(dx.reshape(x.shape))
    out._backward = _backward
    return out


def channel_sum(a: np.ndarray) -> np.ndarray:
    """The sum over every axis but the last (channels last): each image's in its dtype, then theirs in float64."""
    # Each image's sums by one batched GEMM (BLAS sums in blocks), then the images' sums in float64. NumPy's own
    # float32 sum over the outer axes runs one value after another and lost 1e-3 relative on tgmnist; a float64
    # sum throughout is 10x slower (0.8 ms against 0.08 for tgmnist's first batch norm).
    xp, n, c = module_of(a), a.shape[0], a.shape[-1]
    per_image = a.reshape(n, -1, c)
    sums = xp.matmul(xp.ones((1, per_image.shape[1]), dtype=a.dtype), per_image)
    return sums.sum(axis=(0, 1), dtype=np.float64).astype(a.dtype)


def dropout(x: Tensor, keep: np.ndarray, rate: float) -> Tensor:
    """x times keep / (1 - rate): the dropped units zero, the kept ones scaled up (inverted dropout)."""
    # The scaled mask first and one product after, as PyTorch computes it (noise.div_(1 - p); input * noise).
    scale = keep.astype(x.dtype) / x.dtype.type(1 - rate)
    out = Tensor(x.data * scale, _prev=(x,), _op="dropout")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g * scale)
    out._backward = _backward
    return out

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
    if training:
        if count < 2:
            raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                             "use a batch of 2 or more")
        per = x.dtype.type(1 / count)
        mu = channel_sum(x.data) * per
        centred = x.data - mu
        # The mean once more, of what is left: float32's rounding of the first one (~1e-6 relative) moved every
        # gradient of tgmnist by 1e-5 (float64 sums throughout: 1e-6, at ten times the time).
        shift = channel_sum(centred) * per
        mu += shift
        centred -= shift
        var = channel_sum(centred * centred) * per
        if momentum is not None:
            running[0][...] = (1 - momentum) * running[0] + momentum * mu
            running[1][...] = (1 - momentum) * running[1] + momentum * var * (count / (count - 1))
    else:
        mu, var = running
        centred = x.data - mu
    inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat = xp.multiply(centred, inv_std, out=centred)  # centred is not needed again
    y = xhat * gamma.data
    y += beta.data
    out = Tensor(y, _prev=(x, gamma, beta), _op="batchnorm")

    def _backward(g):
        dbeta = channel_sum(g)
        dgamma = channel_sum(g * xhat)
        if beta.requires_grad:
            beta.accumulate(dbeta)
        if gamma.requires_grad:
            gamma.accumulate(dgamma)
        if x.requires_grad:
            scale = gamma.data * inv_std
            dx = g * scale
            if training:
                # The statistics depend on x too: dx = scale (g - mean(g) - xhat mean(g xhat)), as torch
                # writes it, with the channel means taken from the sums above, one pass each.
                per = x.dtype.type(1 / count)
                dx -= xhat * (scale * dgamma * per)
                dx -= scale * dbeta * per
            x.accumulate(dx)
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

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
    axes = tuple(range(x.data.ndim - 1))  # channels last: per-channel arrays broadcast as they are
    count = x.data.size // x.shape[-1]  # values per channel

    def mean(a):
        # Accumulated in float64: channels last, NumPy sums the outer axes one value after another, and in float32
        # that loses ~1e-3 relative over 25,600 values (tgmnist), where torch's blocked sums lose ~1e-6.
        return a.mean(axis=axes, dtype=np.float64).astype(a.dtype)

    def total(a):
        return a.sum(axis=axes, dtype=np.float64).astype(a.dtype)

    if training:
        if count < 2:
            raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                             "use a batch of 2 or more")
        mu = mean(x.data)
        centred = x.data - mu
        var = mean(centred * centred)
        if momentum is not None:
            running[0][...] = (1 - momentum) * running[0] + momentum * mu
            running[1][...] = (1 - momentum) * running[1] + momentum * var * (count / (count - 1))
    else:
        mu, var = running
        centred = x.data - mu
    inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat = centred * inv_std
    y = xhat * gamma.data + beta.data
    out = Tensor(y, _prev=(x, gamma, beta), _op="batchnorm")

    def _backward(g):
        if beta.requires_grad:
            beta.accumulate(total(g))
        if gamma.requires_grad:
            gamma.accumulate(total(g * xhat))
        if x.requires_grad:
            dxhat = g * gamma.data
            if training:  # the statistics depend on x too
                dxhat = dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)
            x.accumulate(dxhat * inv_std)
    out._backward = _backward
    return out


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

"""Elementwise, reshaping and dense ops, and the softmax cross-entropy loss."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of


def relu(x: Tensor) -> Tensor:
    """max(x, 0), with gradient 0 at exactly 0 (torch's convention)."""
    mask = x.data > 0  # strict: a zero input passes no gradient
    out = Tensor(module_of(x.data).maximum(x.data, 0), _prev=(x,), _op="relu")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g * mask)
    out._backward = _backward
    return out


def tanh(x: Tensor) -> Tensor:
    """tanh(x); its gradient 1 - tanh(x)^2 is read from the output."""
    y = module_of(x.data).tanh(x.data)
    out = Tensor(y, _prev=(x,), _op="tanh")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g * (1 - y * y))
    out._backward = _backward
    return out


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), written so that no exp overflows; its gradient y (1 - y) is read from the output."""
    xp = module_of(x.data)
    e = xp.exp(-xp.abs(x.data))  # in (0, 1]: exp of a large positive number would overflow
    y = xp.where(x.data >= 0, 1 / (1 + e), e / (1 + e))
    out = Tensor(y, _prev=(x,), _op="sigmoid")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g * (y * (1 - y)))
    out._backward = _backward
    return out


def flatten(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W), in C, H, W order."""
    out = Tensor(x.data.reshape(x.shape[0], -1), _prev=(x,), _op="flatten")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g.reshape(x.shape))
    out._backward = _backward
    return out


def dense(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x @ w + b with w laid out (in, out)."""
    y = x.data @ w.data
    y += b.data  # in place: one pass and no second array
    out = Tensor(y, _prev=(x, w, b), _op="dense")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g @ w.data.T)
        if w.requires_grad:
            w.accumulate(x.data.T @ g)
        if b.requires_grad:
            b.accumulate(g.sum(axis=0))
    out._backward = _backward
    return out


def cross_entropy(logits: Tensor, y: np.ndarray) -> Tensor:
    """Mean softmax cross-entropy of (N, K) logits against integer labels y, as a 0-d tensor."""
    xp = module_of(logits.data)
    n = logits.shape[0]
    rows = xp.arange(n)
    # Subtracting the row max keeps exp() from overflowing; log-sum-exp is unchanged by it.
    z = logits.data - logits.data.max(axis=1, keepdims=True)
    logp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    out = Tensor(-logp[rows, y].mean(), _prev=(logits,), _op="cross_entropy")

    def _backward(g):
        if logits.requires_grad:
            d = xp.exp(logp)  # softmax
            d[rows, y] -= 1
            d *= g / n
            logits.accumulate(d)
    out._backward = _backward
    return out

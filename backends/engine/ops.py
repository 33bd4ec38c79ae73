"""Elementwise, reshaping and dense ops, and the softmax cross-entropy loss."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine import parallel
from fwbench.backends.engine.activations import ACTIVATIONS, PASSES, relu_grad
from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of


def relu(x: Tensor) -> Tensor:
    """max(x, 0), with gradient 0 at exactly 0 (torch's convention)."""
    return _activation(x, "relu")


def tanh(x: Tensor) -> Tensor:
    """tanh(x); its gradient 1 - tanh(x)^2 is read from the output."""
    return _activation(x, "tanh")


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)); its gradient y (1 - y) is read from the output."""
    return _activation(x, "sigmoid")


def _activation(x: Tensor, name: str) -> Tensor:
    forward, grad = ACTIVATIONS[name]
    xp, n, work = module_of(x.data), len(x.data), parallel.value_work(x.data, PASSES[name])
    y = parallel.output(x.shape, x.dtype, xp)
    parallel.halves(lambda s: forward(x.data[s], y[s]), n, work)
    out = Tensor(y, _prev=(x,), _op=name)

    def _backward(g):
        if x.requires_grad:
            dx = parallel.output(y.shape, y.dtype, xp)

            def part(s):
                grad(g[s], y[s], dx[s])
            parallel.halves(part, n, work)
            x.accumulate(dx)
    out._backward = _backward
    return out


def flatten(x: Tensor) -> Tensor:
    """(N, H, W, C) channels-last -> (N, C*H*W), in the canonical C, H, W order; (N, F) stays as it is."""
    xp = module_of(x.data)
    if x.data.ndim == 2:
        return x
    # The one transpose between layouts: dense weights keep the canonical row order, and this array is small.
    out = Tensor(xp.ascontiguousarray(x.data.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1), _prev=(x,), _op="flatten")

    def _backward(g):
        if x.requires_grad:
            n, h, w, c = x.shape
            x.accumulate(xp.ascontiguousarray(g.reshape(n, c, h, w).transpose(0, 2, 3, 1)))
    out._backward = _backward
    return out


def dense(x: Tensor, w: Tensor, b: Tensor, relu: bool = False) -> Tensor:
    """x @ w + b with w laid out (in, out), then relu if asked."""
    xp = module_of(x.data)
    y = parallel.matmul(x.data, w.data)
    y += b.data  # in place: one pass and no second array
    if relu:
        xp.maximum(y, 0, out=y)
    out = Tensor(y, _prev=(x, w, b), _op="dense_relu" if relu else "dense")

    def _backward(g):
        if relu:
            g = relu_grad(g, y)
        if x.requires_grad:
            x.accumulate(parallel.matmul(g, w.data.T))
        if w.requires_grad:
            # In w's own memory order: a column-major w (its transpose contiguous) takes g.T @ x, transposed back as
            # a view, which OpenBLAS ran 1.7x faster than x.T @ g on pyex's 9216 x 128 layer. Written straight
            # into the optimizer's flat gradient where w has a sink: dmlp's 669K gradients copied took 0.19 ms.
            into = w.gradient_out()
            if column_major(w.data):
                gw = parallel.matmul(g.T, x.data, None if into is None else into.T).T
            else:
                gw = parallel.matmul(x.data.T, g, into)
            w.accumulate(gw if into is None else into)
        if b.requires_grad:
            b.accumulate(g.sum(axis=0, out=b.gradient_out()))  # the sink itself, when there is one
    out._backward = _backward
    return out


def column_major(a) -> bool:
    """Whether 2-D a is laid out column by column (its transpose C-contiguous) and not also row by row."""
    return a.flags.f_contiguous and not a.flags.c_contiguous


def cross_entropy(logits: Tensor, y: np.ndarray, count: int | None = None) -> Tensor:
    """Mean softmax cross-entropy of (N, K) logits against integer labels y, as a 0-d tensor.

    count: the whole batch's size, where these N rows are one replica's share of it: their part of its mean."""
    xp = module_of(logits.data)
    n = logits.shape[0]
    rows = xp.arange(n)
    # Subtracting the row max keeps exp() from overflowing; log-sum-exp is unchanged by it.
    z = logits.data - logits.data.max(axis=1, keepdims=True)
    logp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    losses = -logp[rows, y]
    out = Tensor(losses.mean() if count is None else losses.sum() / logp.dtype.type(count), _prev=(logits,),
                 _op="cross_entropy")
    n = n if count is None else count

    def _backward(g):
        if logits.requires_grad:
            d = xp.exp(logp)  # softmax
            d[rows, y] -= 1
            d *= g / n
            logits.accumulate(d)
    out._backward = _backward
    return out

"""Max and average pooling of NHWC arrays over VALID windows, overlapping or not; max with torch's first-max rule."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of


def windows(shape: tuple[int, ...], size: int, s: int) -> tuple[int, int, list[tuple[slice, ...]], bool]:
    """OH, OW, the index of each window offset (row-major), and whether the windows tile NHWC `shape`."""
    h, w = shape[1:3]
    oh, ow = (h - size) // s + 1, (w - size) // s + 1
    # Offset (a, b) of every window at once is one strided view of x, so a loop over the
    # size*size offsets keeps each operation vectorised over N, OH, OW and C.
    offsets = [(slice(None), slice(a, a + s * (oh - 1) + 1, s), slice(b, b + s * (ow - 1) + 1, s))
               for a in range(size) for b in range(size)]
    return oh, ow, offsets, s == size and h == oh * s and w == ow * s


def maxpool2d(x: Tensor, size: int, stride: int | None = None) -> Tensor:
    """Max over each size x size window of NHWC x, windows `stride` apart (default: size)."""
    xp = module_of(x.data)
    s = size if stride is None else stride
    _, _, offsets, tiled = windows(x.shape, size, s)
    best = x.data[offsets[0]].copy(order="K")  # keep x's memory order: faster
    arg = xp.zeros_like(best, dtype=np.uint8)  # index of the winning offset, row-major in the window
    better = xp.empty_like(best, dtype=bool)
    for k, at in enumerate(offsets[1:], start=1):
        v = x.data[at]
        # Strictly greater, so on ties the earlier offset keeps the win (torch's rule). The winner
        # is the last offset that beat the running max, hence arg = max(arg, k * better).
        xp.greater(v, best, out=better)
        xp.maximum(arg, better.view(np.uint8) * np.uint8(k), out=arg)
        xp.maximum(best, v, out=best)
    # Handed on C-contiguous: flatten is then a free reshape, and relu's mask and a gradient
    # coming back through flatten share one memory order (mixed orders make NumPy loops slow).
    out = Tensor(xp.ascontiguousarray(best), _prev=(x,), _op="maxpool2d")

    def _backward(g):
        if not x.requires_grad:
            return
        g = same_layout(g, best)
        # When the windows tile x exactly, every cell is written below, so dx needs no zeroing.
        dx = xp.empty_like(x.data) if tiled else xp.zeros_like(x.data)
        won = xp.empty_like(arg, dtype=bool)
        for k, at in enumerate(offsets):
            xp.equal(arg, k, out=won)
            if s >= size:  # disjoint windows: each cell hears from one window, so assign
                xp.multiply(g, won, out=dx[at])
            else:  # overlapping windows share input cells, so each offset adds into dx
                dx[at] += g * won
        x.accumulate(dx)
    out._backward = _backward
    return out


def same_layout(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """a, copied into like's memory order if it differs; mixed orders make NumPy loops several times slower."""
    if a.strides == like.strides:
        return a
    out = module_of(like).empty_like(like)
    out[...] = a
    return out


def avgpool2d(x: Tensor, size: int, stride: int | None = None) -> Tensor:
    """Mean over each size x size window of NHWC x, windows `stride` apart (default: size); VALID windows only."""
    xp = module_of(x.data)
    s = size if stride is None else stride
    _, _, offsets, tiled = windows(x.shape, size, s)
    total = x.data[offsets[0]].copy()
    for at in offsets[1:]:
        total += x.data[at]
    count = x.dtype.type(size * size)
    # The window's sum divided by its size, as torch and XLA compute it (not a sum of pre-scaled terms).
    out = Tensor(total / count, _prev=(x,), _op="avgpool2d")

    def _backward(g):
        if not x.requires_grad:
            return
        share = g / count
        dx = xp.empty_like(x.data) if tiled else xp.zeros_like(x.data)
        for at in offsets:
            if s >= size:  # disjoint windows: each cell hears from one window
                dx[at] = share
            else:
                dx[at] += share
        x.accumulate(dx)
    out._backward = _backward
    return out

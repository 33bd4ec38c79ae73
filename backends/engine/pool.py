"""Max and average pooling of NHWC arrays over VALID windows, overlapping or not; max with torch's first-max rule."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine import parallel
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


# A strided pool reads its window offsets from its phases (MaxWindows._phased) where a pixel's channels are at most
# this many bytes. Each offset of x itself is a view whose runs are one pixel's C values, and NumPy's loops over runs of
# 8 floats ran a max 9x slower than over contiguous values; from a phase, a run is a row of the window's outputs. A 3 x
# 3, stride 2 pool's forward on one thread, against the offsets of x: 32 x 28 x 28 x 8 0.71x the time, 64 x 26 x 26 x
# 4 0.55x; with more channels it pays less or loses: 16 0.92x, 24 (on 14 x 14) 1.09x, 64 (on 7 x 7) 1.13x. A 2 x 2
# pool of 32 x 28 x 28 x 8 0.78x, of 32 x 24 x 24 x 6 0.77x. Below PHASE_FROM output values the copies cost more: a
# 3 x 3, stride 3 pool of 32 x 13 x 13 x 8 (4.6K) 1.18x.
PHASE_BYTES = 32
PHASE_FROM = 1 << 14


class MaxWindows:
    """Max pooling's forward and backward on plain NHWC arrays: a whole batch, or a slice of one (conv2d's)."""

    def __init__(self, shape: tuple[int, ...], size: int, stride: int):
        self.size, self.stride = size, stride
        # The winner is kept as its offset's index: a byte for windows up to 16 x 16.
        self.index = np.uint8 if size * size <= 256 else np.uint32
        self.oh, self.ow, self.offsets, self.tiled = windows(shape, size, stride)
        self._kept, self._kept_hwc = None, None  # _origins' flat indices, for the next slice of the same shape

    def forward(self, x: np.ndarray, best: np.ndarray, arg: np.ndarray) -> None:
        """best = the max of each window of x, arg = the index of its first maximal offset (row-major)."""
        phased = self.stride > 1 and x.shape[3] * x.itemsize <= PHASE_BYTES and best.size >= PHASE_FROM and \
            module_of(x) is np
        first_max(self._phased(x) if phased else [x[at] for at in self.offsets], best, arg)

    def _phased(self, x: np.ndarray) -> list[np.ndarray]:
        """Each window offset's values, as views of x's phases: the rows and columns of x at each remainder modulo
        the stride, each phase copied into an array of its own (same values, longer runs)."""
        s, (n, h, w, c) = self.stride, x.shape
        phases = {}
        for p in range(min(s, self.size)):
            for q in range(min(s, self.size)):
                part = x[:, p::s, q::s]
                phases[p, q] = np.empty((n, -(-h // s), -(-w // s), c), x.dtype)
                phases[p, q][:, :part.shape[1], :part.shape[2]] = part
        return [phases[a % s, b % s][:, a // s:a // s + self.oh, b // s:b // s + self.ow]
                for a in range(self.size) for b in range(self.size)]

    def backward(self, g: np.ndarray, arg: np.ndarray, dx: np.ndarray) -> None:
        """dx = g routed to each window's winner; cells that no window's winner is get zero."""
        xp = module_of(g)
        if self.stride < self.size and xp is np:
            return self._scatter(g, arg, dx)
        if not self.tiled:  # when the windows tile dx exactly, every cell is written below
            dx[...] = 0
        if self.stride >= self.size:  # disjoint windows: each cell hears from one window, so assign
            return route(g, arg, [dx[at] for at in self.offsets])
        won = xp.empty(arg.shape, dtype=bool)
        for k, at in enumerate(self.offsets):  # overlapping windows share input cells, so each offset adds into dx
            xp.equal(arg, k, out=won)
            dx[at] += g * won

    def _scatter(self, g: np.ndarray, arg: np.ndarray, dx: np.ndarray) -> None:
        """Overlapping windows: each gradient added at its winner's flat index in one pass (np.bincount)."""
        # Offset by offset, each of the size*size passes loops over runs of C values of strided views, and adds into
        # dx: a 3 x 3, stride 2 pool of 64 x 28 x 28 x 8 took 2.2 ms on one thread, and 0.46 ms this way. A cell's
        # terms are added in the offsets' order, as the loop adds them (the windows' order reversed: a later window
        # holds a cell at an earlier offset), in float64 and then rounded, so float64 gives the loop's bits.
        n, h, w, c = dx.shape
        at = np.take(self._steps(w, c), arg)
        at += self._origins(n, h, w, c)
        dx.reshape(-1)[...] = np.bincount(at.reshape(-1)[::-1], weights=g.reshape(-1)[::-1], minlength=dx.size)

    def _steps(self, w: int, c: int) -> np.ndarray:
        """Each window offset's distance from the window's first cell, in values of an NHWC (., ., w, c) array."""
        return np.array([(a * w + b) * c for a in range(self.size) for b in range(self.size)], dtype=np.intp)

    def _origins(self, n: int, h: int, w: int, c: int) -> np.ndarray:
        """The flat index of each window's first cell, channel by channel: (n, OH, OW, C), kept for the next call."""
        kept = self._kept
        if kept is None or kept.shape[0] < n or self._kept_hwc != (h, w, c):
            s = self.stride
            self._kept_hwc = (h, w, c)
            self._kept = kept = (np.arange(n)[:, None, None, None] * (h * w * c)
                                 + np.arange(self.oh)[:, None, None] * (s * w * c)
                                 + np.arange(self.ow)[:, None] * (s * c) + np.arange(c)).astype(np.intp)
        return kept[:n]  # a shorter slice's windows are the first ones: images come first in NHWC


def first_max(candidates: list[np.ndarray], best: np.ndarray, arg: np.ndarray) -> None:
    """best = the elementwise max of the candidates (a window's offsets, in order), arg = the first one's index."""
    xp = module_of(best)
    best[...] = candidates[0]
    arg[...] = 0
    better = xp.empty(best.shape, dtype=bool)
    code = xp.empty_like(arg)
    for k, v in enumerate(candidates[1:], start=1):
        # Strictly greater, so on ties the earlier offset keeps the win (torch's rule). The winner is the last
        # offset that beat the running max, hence arg = max(arg, k * better).
        xp.greater(v, best, out=better)
        xp.maximum(arg, xp.multiply(better, arg.dtype.type(k), out=code), out=arg)
        xp.maximum(best, v, out=best)  # maximum, not where(better): a NaN propagates


def route(g: np.ndarray, arg: np.ndarray, targets: list[np.ndarray]) -> None:
    """targets[k] = g where offset k won its window (arg == k), else 0: disjoint windows' backward pass."""
    xp = module_of(g)
    won = xp.empty(arg.shape, dtype=bool)
    for k, target in enumerate(targets):
        xp.equal(arg, k, out=won)
        xp.multiply(g, won, out=target)


def maxpool2d(x: Tensor, size: int, stride: int | None = None) -> Tensor:
    """Max over each size x size window of NHWC x, windows `stride` apart (default: size)."""
    xp = module_of(x.data)
    pool = MaxWindows(x.shape, size, size if stride is None else stride)
    best = parallel.output((x.shape[0], pool.oh, pool.ow, x.shape[3]), x.dtype, xp)
    arg = xp.empty(best.shape, dtype=pool.index)
    work = parallel.value_work(x.data, len(pool.offsets))
    parallel.halves(lambda s: pool.forward(x.data[s], best[s], arg[s]), len(best), work)
    out = Tensor(best, _prev=(x,), _op="maxpool2d")

    def _backward(g):
        if x.requires_grad:
            dx, g = parallel.output(x.shape, x.dtype, xp), same_layout(g, best)
            parallel.halves(lambda s: pool.backward(g[s], arg[s], dx[s]), len(best), work)
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


class AvgWindows:
    """Average pooling's forward and backward on plain NHWC arrays, with MaxWindows' signatures (arg is unused)."""
    index = None  # no winner to keep

    def __init__(self, shape: tuple[int, ...], size: int, stride: int):
        self.size, self.stride = size, stride
        self.oh, self.ow, self.offsets, self.tiled = windows(shape, size, stride)

    def forward(self, x: np.ndarray, out: np.ndarray, arg: None = None) -> None:
        """out = the mean of each window of x."""
        # Separably: the window's rows summed first, over whole image rows (long runs), then its columns. Summing
        # its size*size offsets one by one made NumPy loop over runs of C values at every step: lenet5's first
        # pool (6 channels) took 82 us a slice of 12 images that way.
        size, n = self.size, x.shape[0]
        rows = module_of(x).empty((n, self.oh, x.shape[2], x.shape[3]), dtype=x.dtype)
        rows[...] = x[:, self._down(0)]
        for i in range(1, size):
            rows += x[:, self._down(i)]
        out[...] = rows[:, :, self._across(0)]
        for j in range(1, size):
            out += rows[:, :, self._across(j)]
        # The window's sum divided by its size, as torch and XLA compute it (not a sum of pre-scaled terms).
        out /= x.dtype.type(size * size)

    def backward(self, g: np.ndarray, arg: None, dx: np.ndarray) -> None:
        """dx = each window's gradient shared equally among its cells."""
        xp, size, n = module_of(g), self.size, g.shape[0]
        share = g / g.dtype.type(size * size)
        disjoint = self.stride >= size  # each cell hears from one window: assign, do not add
        # Separably again: each window's share spread across its columns, then those rows copied down its rows.
        cols = (xp.empty if self.tiled else xp.zeros)((n, self.oh, dx.shape[2], dx.shape[3]), dtype=g.dtype)
        for j in range(size):
            if disjoint:
                cols[:, :, self._across(j)] = share
            else:
                cols[:, :, self._across(j)] += share
        if not self.tiled:
            dx[...] = 0
        for i in range(size):
            if disjoint:
                dx[:, self._down(i)] = cols
            else:
                dx[:, self._down(i)] += cols

    def _down(self, i: int) -> slice:
        """The input rows at offset i of every window."""
        return slice(i, i + self.stride * (self.oh - 1) + 1, self.stride)

    def _across(self, j: int) -> slice:
        """The input columns at offset j of every window."""
        return slice(j, j + self.stride * (self.ow - 1) + 1, self.stride)


def avgpool2d(x: Tensor, size: int, stride: int | None = None) -> Tensor:
    """Mean over each size x size window of NHWC x, windows `stride` apart (default: size); VALID windows only."""
    xp = module_of(x.data)
    pool = AvgWindows(x.shape, size, size if stride is None else stride)
    mean = parallel.output((x.shape[0], pool.oh, pool.ow, x.shape[3]), x.dtype, xp)
    work = parallel.value_work(x.data, len(pool.offsets))
    parallel.halves(lambda s: pool.forward(x.data[s], mean[s]), len(mean), work)
    out = Tensor(mean, _prev=(x,), _op="avgpool2d")

    def _backward(g):
        if x.requires_grad:
            dx, g = parallel.output(x.shape, x.dtype, xp), same_layout(g, mean)
            parallel.halves(lambda s: pool.backward(g[s], None, dx[s]), len(mean), work)
            x.accumulate(dx)
    out._backward = _backward
    return out


POOLS = {"max": MaxWindows, "avg": AvgWindows}

"""Stride-1 conv2d by Winograd's minimal filtering F(m x m, r x r): forward, weight and input gradients from one
set of tile transforms, on channels-last (NHWC) arrays, a slice of images at a time."""
from __future__ import annotations

import functools
from functools import partial

import numpy as np

from fwbench.backends.engine import parallel
from fwbench.backends.engine.epilogue import images, longest
from fwbench.backends.engine.norm import image_sums
from fwbench.backends.engine.pool import first_max, route
from fwbench.backends.engine.xp import module_of

# Kernel size r -> output tile m. F(4x4, 5x5) multiplies 64 values a tile where the direct conv multiplies 400
# (6.25x fewer GEMM FLOPs), F(4x4, 4x4) 49 where it multiplies 256 (5.2x), F(4x4, 3x3) 36 where it multiplies 144
# (4x). Larger tiles need more interpolation points, and the float error grows with them: see POINTS. The overlap
# spec's 12->20 4 x 4 conv on 24 x 24 (padding 1), forward and backward with its relu and 3 x 3 stride-2 avg pool
# on two workers, 12 alternating rounds: 3.78 + 5.54 ms by F(4x4, 4x4) against 4.12 + 7.32 direct (0.81x); by
# F(3x3, 4x4) 4.80 + 6.92, by F(2x2, 4x4) 4.53 + 7.47. Its float32 error: 1.3e-6 / 1.8e-6 / 3.5e-6 (value, input
# and weight gradient; the direct conv's 2.1e-7 / 1.7e-7 / 3.6e-7).
TILES = {3: 4, 4: 4, 5: 4}
# Kernel size r -> a larger output tile, taken where its tiles cover the output with less transform work than TILES'
# (tile(): a^3 a tile, a^2 values each transformed by a-point sums). F(5x5, 3x3) covers 14 x 14 with 9 tiles of
# 7 x 7 where F(4x4, 3x3) overhangs it with 16 of 6 x 6: 441 values against 576, 0.89x the work. vgg's two 3 x 3
# convs on 14 x 14: its step 0.93-0.97x the time, flaxex's 0.91-0.96x (three runs of 4 alternating rounds in fresh
# processes; the output transform then no longer pools vgg's second: with that one left at F(4x4) 0.982x). By values
# alone, pyex's 24 x 24 would take it too (1225 against 1296, but 1.10x the work): its step 1.16x; by work 1.00x.
# It rounds more, its points reaching 1/2: flaxex's second conv 1.3e-6 / 2.5e-6 / 2.5e-6 in float32 (value, input
# and weight gradient) against 8.3e-7 / 1.6e-6 / 1.5e-6 (benchmarks/winograd_error.py).
WIDE_TILES = {3: 5}
# The interpolation points of Toom-Cook, besides infinity: the smallest in magnitude first, as Lavin and Gray
# (2016) choose them, since the transforms' entries are their powers. F(4x4, 3x3) with 1/2 and -2 in place of +-2
# rounded 1.3-1.5x less on normal random inputs (benchmarks/winograd_error.py --points 0,1,-1,0.5,-2,2,-0.5), but on
# tgmnist's MNIST batch its one-step float32 gradients read 2.2e-5 from float64 against 7.0e-6: not kept.
POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
# Winograd runs where its GEMM multiplies at most 1/MIN_GAIN of the direct conv's values and each transformed value
# feeds at least MIN_DEPTH of them (C*O / (C + O)): below either, its transforms, which are copies and thin GEMMs,
# cost more than the GEMM saves. Measured on the 2-core reference CPU, forward and backward of 64 images on two
# workers, Winograd's time over the direct path's (gain, depth): tgmnist's 5x5 32->32 on 24x24 0.54-0.61 (6.25,
# 16), pyex's 3x3 32->64 on 26x26 0.62-0.67 (4, 21), tgmnist's 3x3 32->64 on 10x10 0.83-0.96 (4, 21), 64->64 on
# 28x28 0.60 (4, 32), 5x5 8->16 on 24x24 0.80 (6.25, 5.3), 3x3 16->16 on 28x28 0.95-0.98 (4, 8); and left out: 3x3
# 64->64 on 8x8 1.18-1.25 (2.25, 32), flaxex's 3x3 32->64 on 14x14 0.90-0.99 (3.1, 21; LOW_GAIN below takes it
# now), 3x3 8->8 on 28x28 1.15 (4, 4), lenet5's 5x5 6->16 on 14x14 1.14-1.39 (4.3, 4.4).
MIN_GAIN = 3.5
MIN_DEPTH = 5
# A gain from LOW_GAIN pays where each transformed value feeds at least DEEP (the transforms' cost per GEMM FLOP
# falls as the depth grows). Measured 2026-12-04, after the set-up's cost fell to a tenth, the same way, 12
# alternating rounds (gain 3.06 on 14 x 14 and 7 x 7): 32->32 0.92-0.94 (depth 16), with its 2 x 2 max pool 0.92,
# 32->64 0.90 (21), 64->64 on 7 x 7 0.82 (32), 32->32 on 7 x 7 0.98 (16); and left out: 24->24 1.00 (12), 16->32
# 1.10-1.13 (10.7), with its pool 1.10. Those were a conv's two shares on two workers; since the step is split by
# images (numpy_split.py), each replica runs its convs alone, and there vgg's 16->32 on 14 x 14 pays: its step 0.96x
# (4 alternating rounds in fresh processes), the other specs within the noise (0.97-1.03x, 3 rounds).
LOW_GAIN = 3.0
DEEP = 10
# Images per slice: as many as keep a slice's transformed input (a*a values a tile per channel) about this size.
SLICE_BYTES = 1 << 20
# The forward pass keeps the whole batch's transformed input for the weight gradient up to this size, as the direct
# path keeps its im2col (conv.KEEP_COLS_BYTES); above it (an evaluation of 1,000 images: tgmnist's 205 MB) each
# slice's goes to a worker's buffer, and a backward pass transforms its slices again.
KEEP_BYTES = 64 << 20
# Winograd runs in float32 only. In float64 the engine is fwbench's reference (`fwbench agree`), and its direct conv
# sums exact products exactly where the inputs allow: agree's tie case (0/1 inputs, weights on a 1/4 grid) ties
# thousands of relu inputs and pool windows, and Winograd's transforms, exact only to rounding, broke them by noise
# (torch's float32 gradients read 0.09-0.13 from a Winograd reference on pyex and tgmnist, 1.6e-6 from a direct one).
DTYPES = (np.float32,)


def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (m, a), G (a, r) and B^T (a, a), a = m + r - 1, in float64: y = A^T [(G w G^T) * (B^T d B)] A."""
    a = m + r - 1
    p = np.array(POINTS[:a - 1])

    def evaluate(k: int) -> np.ndarray:
        """(a, k): a polynomial of degree k - 1 at each point, and its leading coefficient (the point at infinity)."""
        e = np.zeros((a, k))
        e[:-1] = p[:, None] ** np.arange(k)
        e[-1, -1] = 1
        return e
    # Correlation is the transpose of polynomial multiplication, whose interpolation is V^-1: y = E_m^T [(E_r w) *
    # (V^-T d)]. Each point's 1/prod(p_j - p_k) goes with the weights, whose transform is computed once a step.
    f = np.ones(a)
    f[:-1] = [np.prod([pj - pk for pk in p if pk != pj]) for pj in p]
    return evaluate(m).T, evaluate(r) / f[:, None], f[:, None] * np.linalg.inv(evaluate(a)).T


@functools.lru_cache(maxsize=None)
def transforms(m: int, r: int, dtype) -> tuple[np.ndarray, ...]:
    """A^T, A, B^T, B and G (x) G (a*a, r*r) in dtype, read-only: computed once, not at every conv call."""
    at, g, bt = matrices(m, r)
    out = tuple(np.ascontiguousarray(z, dtype=dtype) for z in (at, at.T, bt, bt.T, np.kron(g, g)))
    for z in out:
        z.setflags(write=False)
    return out


def tile(r: int, oh: int, ow: int) -> int:
    """The output tile m for an r x r kernel over an (oh, ow) output: TILES[r], or WIDE_TILES[r] where less work."""
    def work(m: int) -> int:
        return (m + r - 1) ** 3 * -(-oh // m) * -(-ow // m)
    wide = WIDE_TILES.get(r)
    return wide if wide is not None and work(wide) < work(TILES[r]) else TILES[r]


def applies(x: np.ndarray, w_shape: tuple, stride: int, pads: tuple[int, int, int, int]) -> bool:
    """Whether a conv of NHWC x by w (O, C, kh, kw) at this stride and padding runs by Winograd here."""
    o, c, kh, kw = w_shape
    # Off the CPU a GEMM is cheap and each transform a kernel launch more.
    if module_of(x) is not np or stride != 1 or kh != kw or kh not in TILES or x.dtype not in DTYPES:
        return False
    m, a = TILES[kh], TILES[kh] + kh - 1
    oh, ow = x.shape[1] + pads[0] + pads[1] - kh + 1, x.shape[2] + pads[2] + pads[3] - kw + 1
    if min(oh, ow) < 1:
        return False
    gain = kh * kw * oh * ow / (a * a * -(-oh // m) * -(-ow // m))
    depth = c * o / (c + o)
    return depth >= MIN_DEPTH and (gain >= MIN_GAIN or gain >= LOW_GAIN and depth >= DEEP)


class Winograd:
    """One conv2d call by Winograd: its geometry, its transformed weight and its slices of images."""

    def __init__(self, x: np.ndarray, w, b, pads: tuple[int, int, int, int], shared: bool = False):
        self.xp, self.x, self.pads, self.shared = np, x, pads, shared  # shared: as conv.Conv's
        empty = parallel.empty if shared else np.empty
        self.n, h, wd, self.c = x.shape
        self.o, _, r, _ = w.shape
        top, bottom, left, right = pads
        self.oh, self.ow = h + top + bottom - r + 1, wd + left + right - r + 1
        # Whether it runs by Winograd is measured with TILES' gain (applies()); its tile is the one of less work.
        m = self.m = tile(r, self.oh, self.ow)
        self.a = m + r - 1
        self.ty, self.tx = -(-self.oh // m), -(-self.ow // m)  # tiles down and across; the last ones may overhang
        self.hp, self.wp = self.ty * m + r - 1, self.tx * m + r - 1  # the input the tiles cover, zero-padded
        self.at, self.a_, self.bt, self.b_, self.gg = transforms(m, r, x.dtype)
        # U[i, j] = (G w G^T)[i, j] as a (C, O) matrix, for the batched GEMM over the a*a tile positions: one GEMM by
        # G (x) G over the r*r kernel offsets. By einsum, which searched its path at every call, vgg's conv set-up took
        # 240 us and its weight gradient 94, on the step's one core; now 23 and 9.
        u = self.gg @ w.data.reshape(self.o * self.c, r * r).T  # (a*a, O*C)
        self.u = empty((self.a * self.a, self.c, self.o), x.dtype)
        self.u[...] = u.reshape(self.a * self.a, self.o, self.c).transpose(0, 2, 1)
        self.bias = b.data
        self.tiles = self.ty * self.tx  # an image's
        per_image = self.a * self.a * self.tiles * max(self.c, self.o) * x.itemsize
        self.slices = parallel.slices(self.n, SLICE_BYTES // per_image)
        # The GEMM's FLOPs and the transforms' values, as conv.Conv counts its work.
        values = self.tiles * self.a * self.a * (self.c + self.o) * 2
        self.work = self.n * (2 * self.a * self.a * self.tiles * self.c * self.o + parallel.VALUE_FLOPS * values)
        # The transformed input, kept for the weight gradient: (a*a, tiles, C), the size of the batch's im2col over
        # the gain (0.16x on tgmnist's 5x5 conv).
        size = self.a * self.a * self.n * self.tiles * self.c * x.itemsize
        self.v = empty((self.a * self.a, self.n * self.tiles, self.c), x.dtype) if size <= KEEP_BYTES else None
        self.pool = 0  # the size of the max pool the output transform computes, if it does (pools())

    def __getstate__(self) -> dict:
        # For a worker process: its transform matrices are its own (transforms() caches them), not pickled each call.
        state = dict(self.__dict__)
        for name in ("at", "a_", "bt", "b_", "gg"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.at, self.a_, self.bt, self.b_, self.gg = transforms(self.m, self.a - self.m + 1, self.u.dtype)

    def pools(self, windows) -> bool:
        """Whether the output transform takes over this pool from now on: disjoint max windows inside exact tiles."""
        # Each window offset is then one contiguous block of the transform's output, where the pool reads the conv's
        # output in runs of O values. vgg's 16-channel conv and pool: a slice of 8 images' output transform and pool
        # on one thread took 250 us instead of 355; forward and backward of the batch on two workers 0.945x the time
        # (12 alternating rounds).
        size = windows.size
        if windows.index is None or windows.stride != size or self.m % size or (self.oh, self.ow) != (
                self.ty * self.m, self.tx * self.m):
            return False
        self.pool = size
        return True

    def scratch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """A worker's own buffers for one slice: its zero-bordered input (the tiles' overhang reads the zeros), and
        its transformed input where the batch's is not kept."""
        m = self.slices[0].stop
        padded = np.zeros((m, self.hp, self.wp, self.c), dtype=self.x.dtype)
        v = None if self.v is not None else np.empty((self.a * self.a, m * self.tiles, self.c), dtype=self.x.dtype)
        return padded, v

    def forward(self, s: slice, scratch: tuple, z: np.ndarray, arg: np.ndarray | None = None) -> None:
        """The conv's output for slice s into z (images, OH, OW, O), bias added; pooled, winners in arg, if pools()."""
        v = self._transformed(s, scratch)
        mm = np.matmul(v, self.u)  # (a*a, tiles, O)
        if self.pool:
            self._transform_pooled(mm, z, arg)
        else:
            self._transform_output(mm, z)

    def _transformed(self, s: slice, scratch: tuple, again: bool = False) -> np.ndarray:
        """Slice s's transformed input (a*a, tiles, C); again: the backward pass asking for the forward pass's."""
        padded, buffer = scratch
        k = s.stop - s.start
        if self.v is not None:
            v = self.v[:, s.start * self.tiles:s.stop * self.tiles]
            if again:
                return v
        else:
            v = buffer[:, :k * self.tiles]
        self._transform_input(self._covered(s, padded[:k]), v)
        return v

    def _covered(self, s: slice, padded: np.ndarray) -> np.ndarray:
        """Slice s's input as the tiles read it: x itself where they cover it exactly, else padded with zeros."""
        if not any(self.pads) and self.x.shape[1:3] == (self.hp, self.wp):
            return self.x[s]
        top, _, left, _ = self.pads
        padded[:, top:top + self.x.shape[1], left:left + self.x.shape[2]] = self.x[s]
        return padded

    def _transform_input(self, d: np.ndarray, out: np.ndarray) -> None:
        """V[i, j] = B^T d B over every tile of d (images, hp, wp, C): two GEMMs with a inner products each."""
        a, m, k, c = self.a, self.m, d.shape[0], self.c
        if d.strides[2] != c * d.strides[3]:  # a row's (wp, C) values must be evenly spaced, as one run
            d = np.ascontiguousarray(d)
        sn, sh, _, sc = d.strides
        # Tile row t's a input rows are a matrix of d as it lies (rows sh apart, (wp, C) values each), so one
        # batched GEMM reads them in place: copying them side by side for one large GEMM first took 1.4-1.9x as long
        # (vgg's 16-channel conv, a slice of 9 images).
        rows = np.lib.stride_tricks.as_strided(d, (k, self.ty, a, self.wp * c), (sn, m * sh, sh, sc))
        down = np.matmul(self.bt, rows).reshape(k * self.ty, a, self.wp, c)  # (images*ty, i, wp, C)
        s0, s1, s2, s3 = down.strides
        across = np.empty((a, a, k * self.ty, self.tx, c), dtype=d.dtype)  # (i, l, images*ty, tx, C)
        across[...] = np.lib.stride_tricks.as_strided(down, across.shape, (s1, s2, s0, m * s2, s3))
        np.matmul(self.bt, across.reshape(a, a, -1), out=out.reshape(a, a, -1))

    def _transform_output(self, mm: np.ndarray, z: np.ndarray) -> None:
        """z's tiles = A^T M A plus the bias, cut to (OH, OW) where the last tiles overhang."""
        a, m, o, k = self.a, self.m, self.o, z.shape[0]
        across = np.matmul(self.at, mm.reshape(a, a, -1))  # (i, m_j, tiles*O)
        y = (self.at @ across.reshape(a, -1)).reshape(m, m, k, self.ty, self.tx, o)  # (m_i, m_j, ...)
        # The bias is added in the copy that puts the tiles in place: one pass, not two.
        if self.oh == self.ty * m and self.ow == self.tx * m:
            np.add(y.transpose(2, 3, 0, 4, 1, 5), self.bias, out=z.reshape(k, self.ty, m, self.tx, m, o))
        else:
            full = np.empty((k, self.ty, m, self.tx, m, o), dtype=z.dtype)
            np.add(y.transpose(2, 3, 0, 4, 1, 5), self.bias, out=full)
            z[...] = full.reshape(k, self.ty * m, self.tx * m, o)[:, :self.oh, :self.ow]

    def _transform_pooled(self, mm: np.ndarray, z: np.ndarray, arg: np.ndarray) -> None:
        """z = the max pool of the tiles A^T M A plus the bias, arg = its winners, as MaxWindows computes them."""
        a, m, o, k, size = self.a, self.m, self.o, z.shape[0], self.pool
        q = m // size  # windows down (and across) a tile
        across = np.matmul(self.at, mm.reshape(a, a, -1))
        y = (self.at @ across.reshape(a, -1)).reshape(q, size, q, size, k, self.ty, self.tx, o)
        y += self.bias  # before the max, as the plain pool sees it: the winners are the same on rounding ties
        best = np.empty((q, q, k, self.ty, self.tx, o), dtype=z.dtype)  # (window row, column in a tile, ...)
        won = np.empty(best.shape, dtype=arg.dtype)
        first_max([y[:, i, :, j] for i in range(size) for j in range(size)], best, won)
        z.reshape(k, self.ty, q, self.tx, q, o)[...] = best.transpose(2, 3, 0, 4, 1, 5)
        arg.reshape(k, self.ty, q, self.tx, q, o)[...] = won.transpose(2, 3, 0, 4, 1, 5)

    def gradients(self, s: slice, g: np.ndarray, dx: np.ndarray | None, scratch: tuple,
                  padded: np.ndarray | None, arg: np.ndarray | None = None) -> np.ndarray:
        """Slice s's gradient of U (a*a, C, O), from g (images, OH, OW, O); its input gradient into dx[s].

        scratch: the worker's buffers (scratch()); padded: where the input gradient is put together when the tiles
        do not cover dx exactly; arg: the pool's winners, where g is the pooled output's gradient (pools())."""
        k = s.stop - s.start
        gm = self._untransform_output(g, arg)  # (a*a, tiles, O): the gradient at M
        v = self._transformed(s, scratch, again=True)
        du = np.matmul(v.transpose(0, 2, 1), gm)
        if dx is not None:
            dv = np.matmul(gm, self.u.transpose(0, 2, 1))  # (a*a, tiles, C)
            exact = not any(self.pads) and dx.shape[1:3] == (self.hp, self.wp)  # the tiles cover dx exactly
            self._untransform_input(dv, dx[s] if exact else padded[:k])
            if not exact:
                top, _, left, _ = self.pads
                dx[s] = padded[:k, top:top + dx.shape[1], left:left + dx.shape[2]]
        return du

    def _untransform_output(self, g: np.ndarray, arg: np.ndarray | None) -> np.ndarray:
        """The transpose of _transform_output (of _transform_pooled, given arg): A g A^T over g's tiles."""
        a, m, o, k = self.a, self.m, self.o, g.shape[0]
        tiled = np.empty((m, m, k, self.ty, self.tx, o), dtype=g.dtype)  # (m_i, m_j, images, ty, tx, O)
        if arg is not None:  # each window offset's gradient is one contiguous block of the tiles
            size = self.pool
            q = m // size
            pooled = np.empty((q, q, k, self.ty, self.tx, o), dtype=g.dtype)
            won = np.empty(pooled.shape, dtype=arg.dtype)
            pooled[...] = g.reshape(k, self.ty, q, self.tx, q, o).transpose(2, 4, 0, 1, 3, 5)
            won[...] = arg.reshape(k, self.ty, q, self.tx, q, o).transpose(2, 4, 0, 1, 3, 5)
            blocks = tiled.reshape(q, size, q, size, k, self.ty, self.tx, o)
            route(pooled, won, [blocks[:, i, :, j] for i in range(size) for j in range(size)])
        else:
            if self.oh != self.ty * m or self.ow != self.tx * m:  # zeros where the tiles overhang
                full = np.zeros((k, self.ty * m, self.tx * m, o), dtype=g.dtype)
                full[:, :self.oh, :self.ow] = g
                g = full
            tiled.transpose(2, 3, 0, 4, 1, 5)[...] = g.reshape(k, self.ty, m, self.tx, m, o)
        down = (self.a_ @ tiled.reshape(m, -1)).reshape(a, m, -1)  # (i, m_j, ...)
        return np.matmul(self.a_, down).reshape(a * a, k * self.tiles, o)

    def _untransform_input(self, dv: np.ndarray, dpadded: np.ndarray) -> None:
        """The transpose of _transform_input: B dV B^T over every tile, overlapping tiles added, into dpadded."""
        a, m, k, c = self.a, self.m, dpadded.shape[0], self.c
        across = np.matmul(self.b_, dv.reshape(a, a, -1)).reshape(a, a, k * self.ty, self.tx, c)  # (i, l, ...)
        # Tiles overlap by r - 1 columns: the first m of each tile's are written, the rest added one offset at a time,
        # so that no two writes of one pass meet.
        down = np.empty((a, k * self.ty, self.wp, c), dtype=dv.dtype)
        down[:, :, :m * self.tx].reshape(a, k * self.ty, self.tx, m, c)[...] = across[:, :m].transpose(0, 2, 3, 1, 4)
        down[:, :, m * self.tx:] = 0
        for l in range(m, a):
            down[:, :, l:l + m * self.tx:m] += across[:, l]
        rows = (self.b_ @ down.reshape(a, -1)).reshape(a, k, self.ty, self.wp, c)
        dpadded[:, :m * self.ty].reshape(k, self.ty, m, self.wp, c)[...] = rows[:m].transpose(1, 2, 0, 3, 4)
        dpadded[:, m * self.ty:] = 0
        for i in range(m, a):
            dpadded[:, i:i + m * self.ty:m] += rows[i]

    def backward(self, x, w, b, g: np.ndarray, after) -> None:
        """Accumulate the gradients of w, b and (when it needs one) x from g, the NHWC gradient at the output."""
        dx = (parallel.empty if self.shared else parallel.output)(x.shape, g.dtype) if x.requires_grad else None
        work = partial(self.sums, g, dx, after)
        # Summed in worker order: the same order every step.
        (du, db), *others = parallel.share(work, after.runs, 2 * self.work, remote=self.shared)
        for other_du, other_db in others:
            du += other_du
            db += other_db
        if w.requires_grad:
            w.accumulate(self.weight_gradient(du))
        if b.requires_grad:
            b.accumulate(db.astype(g.dtype))
        if dx is not None:
            x.accumulate(dx)

    def sums(self, g: np.ndarray, dx: np.ndarray | None, after, _: int,
             mine: list[list[slice]]) -> tuple[np.ndarray, np.ndarray]:
        """A worker's runs: their input gradients into dx; returns the sums of their U and bias gradients."""
        o = self.o
        du, db = np.zeros_like(self.u), np.zeros(o)
        sums = np.empty((max(s.stop - s.start for run in mine for s in run), o), dtype=g.dtype)
        scratch = self.scratch()
        dpadded = np.zeros_like(scratch[0]) if dx is not None else None
        pooled = after.windows is not None
        unpooled = np.empty((longest(mine), self.oh, self.ow, o), dtype=g.dtype) if pooled else None
        for run in mine:
            r = images(run)
            gr = after.grad(g[r], r, unpooled[:r.stop - r.start] if pooled else None)
            for s in run:
                gs = gr[s.start - r.start:s.stop - r.start]
                du += self.gradients(s, gs, dx, scratch, dpadded, after.arg[s] if self.pool else None)
                # Pooled here, g holds the winners' terms without the others' zeros: the same sum, in another
                # order (within 1e-14 of the plain ops' in float64). Each image's sum by a batched GEMM, then
                # theirs in float64, as batch norm sums: NumPy's sum down the rows of the slice adds one pixel's
                # row after another, and rounded 5x as much in float32 (2.1e-6 relative against 4.4e-7 on the
                # direct path, whose GEMM sums in blocks).
                per_image = sums[:s.stop - s.start]
                image_sums(gs.reshape(len(per_image), -1), per_image)
                db += per_image.sum(axis=0, dtype=np.float64)
        return du, db

    def weight_gradient(self, du: np.ndarray) -> np.ndarray:
        """The (O, C, r, r) gradient of w from that of U: G^T dU G."""
        r = self.a - self.m + 1
        dw = self.gg.T @ du.reshape(self.a * self.a, self.c * self.o)  # (r*r, C*O)
        return np.ascontiguousarray(dw.reshape(r, r, self.c, self.o).transpose(3, 2, 0, 1))

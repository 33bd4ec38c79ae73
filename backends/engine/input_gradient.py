"""conv2d's input gradient, a slice of images at a time: stride 1 by kernel rows or by flat rows, else col2im."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fwbench.backends.engine.patches import patches

if TYPE_CHECKING:
    from fwbench.backends.engine.conv import Conv

# A stride-1 conv computes its input gradient by kernel rows when that GEMM's kh*C columns are at least half its O
# inner products: O/2 <= kh*C. Below it (one input channel and many outputs), by flat rows. Measured here, conv
# backward on two workers against the GEMM of the gradient zero-padded on every side (the convolution by the turned
# kernel): tgmnist's convs 0.92, 0.91 and 0.95x the time, pyex's second 0.96x; against flat rows, lenet5's second
# 0.85x, C 8 -> O 32 (3 x 3) 0.94x, C 16 -> O 64 1.01x, and C 1 -> O 32 (3 x 3) 1.21x.
ROWS_WHEN = 2  # kh*C*ROWS_WHEN >= O
# Below this many input channels, the input gradient by kernel rows sums its shares channels first and transposes the
# sum once: in NHWC each add runs over C values at a time. Measured here, one slice's input gradient against NHWC
# shares: C 3, 6 and 8 0.57-0.65x the time (lenet5's second conv 0.62x), C 16 1.03x, C 32 (flaxex's) 1.18x.
ROWS_CHANNELS_FIRST = 16


class InputGradient:
    """conv2d's input gradient, a slice of images at a time: stride 1 by kernel rows or by flat rows, else col2im."""

    def __init__(self, conv: Conv, dx: np.ndarray, o: int):
        self.conv, self.dx, xp = conv, dx, conv.xp
        c, kh, kw, m = conv.c, conv.kh, conv.kw, conv.slices[0].stop
        w = conv.wb[:-1].reshape(kh, kw, c, o)
        self.hp, self.wp = conv.oh + kh - 1, conv.ow + kw - 1  # the padded input, when the stride is 1
        self.by_rows = conv.stride == 1 and kh * c * ROWS_WHEN >= o
        self.flat = conv.stride == 1 and not self.by_rows
        if self.by_rows:
            # dx[n, y, x] = sum over i of T[n, y - i, x, i], where T[n, r, x, i] = sum over j, o of
            # g[n, r, x - j, o] w[o, :, i, j]: one GEMM of g's rows cut kw pixels wide at every x (its row zero-padded
            # by kw - 1 on each side) by a (kw*O, kh*C) matrix, then one add of whole image rows per kernel row. Of
            # the padded convolution's zeros, only those at the rows' ends are multiplied (W/OW, not H*W/(OH*OW)).
            self.by_row = xp.ascontiguousarray(w[:, ::-1].transpose(1, 3, 0, 2).reshape(kw * o, kh * c))
            self.gwide = xp.zeros((m, conv.oh, conv.ow + 2 * (kw - 1), o), dtype=dx.dtype)
            self.windows = patches(self.gwide, 1, kw, 1, conv.oh, self.wp)[:, :, :, 0]  # (m, OH, wp, kw, O)
            self.cut = xp.empty((m, conv.oh, self.wp, kw, o), dtype=dx.dtype)
            self.channels_first = c < ROWS_CHANNELS_FIRST
            if self.channels_first:  # the GEMM transposed: (kh*C, pixels), so each add runs along image rows
                self.by_row = xp.ascontiguousarray(self.by_row.T)
                # Flat, so that a shorter last slice takes a contiguous prefix of each.
                self.shares = xp.empty(kh * c * m * conv.oh * self.wp, dtype=dx.dtype)
                self.summed = xp.empty(c * m * self.hp * self.wp, dtype=dx.dtype)
            else:
                self.shares = xp.empty((m, conv.oh, self.wp, kh, c), dtype=dx.dtype)
        elif self.flat:
            # Channels first and each image's rows end to end: an output pixel's gradient reaches the input pixel
            # kernel offset (i, j) away at a fixed distance i*wp + j along them, so each offset's share is one
            # contiguous add over every image row at once, where it is a run of OW*C values a row in NHWC. The
            # gradient is laid on rows wp wide (the padded input's), its last kw - 1 columns zero; they add zeros.
            self.wk = conv.wb[:-1]  # (kh*kw*C, O)
            self.gwide = xp.zeros((o, m, conv.oh, self.wp), dtype=dx.dtype)
            self.rows = xp.empty((c, m, self.hp * self.wp + kw - 1), dtype=dx.dtype)
        else:
            # (kh*kw, O, C): one (O, C) matrix per kernel offset, so that each offset's patch gradients come out of a
            # GEMM as one contiguous (pixels, C) block, and col2im adds whole image rows.
            self.per_offset = xp.ascontiguousarray(w.reshape(kh * kw, c, o).transpose(0, 2, 1))
        # The padded input's gradient, when the conv pads (its border is then cut off); else dx itself.
        self.dpadded = xp.empty(conv.padded_shape, dtype=dx.dtype) if any(conv.pads) else None

    def add(self, s: slice, g: np.ndarray) -> None:
        """Write slice s's input gradient into dx, from g (m*OH*OW, O), the gradient at its outputs."""
        conv, xp, m = self.conv, self.conv.xp, s.stop - s.start
        target = self.dx[s] if self.dpadded is None else self.dpadded[:m]
        if self.by_rows:
            self._by_rows(g, target)
        elif self.flat:
            self._flat(g, target)
        else:
            self._col2im(xp.matmul(g, self.per_offset), target)
        if self.dpadded is not None:
            top, _, left, _ = conv.pads
            self.dx[s] = target[:, top:top + self.dx.shape[1], left:left + self.dx.shape[2]]

    def _by_rows(self, g: np.ndarray, target: np.ndarray) -> None:
        """Stride 1: g's rows cut kw pixels wide, one GEMM to every kernel row's share, then one add per kernel row."""
        conv, m, kh, kw, oh = self.conv, target.shape[0], self.conv.kh, self.conv.kw, self.conv.oh
        self.gwide[:m, :, kw - 1:kw - 1 + conv.ow] = g.reshape(m, oh, conv.ow, -1)
        cut = self.cut[:m]
        cut[...] = self.windows[:m]
        if self.channels_first:
            c, wp = conv.c, self.wp
            shares = self.shares[:kh * c * m * oh * wp].reshape(kh, c, m, oh, wp)
            summed = self.summed[:c * m * self.hp * wp].reshape(c, m, self.hp, wp)
            conv.xp.matmul(self.by_row, cut.reshape(-1, self.by_row.shape[1]).T, out=shares.reshape(kh * c, -1))
            summed[:, :, :oh] = shares[0]
            summed[:, :, oh:] = 0
            for i in range(1, kh):
                summed[:, :, i:i + oh] += shares[i]
            target[...] = summed.transpose(1, 2, 3, 0)
            return
        shares = self.shares[:m]
        conv.xp.matmul(cut.reshape(-1, self.by_row.shape[0]), self.by_row, out=shares.reshape(-1, self.by_row.shape[1]))
        target[:, :oh] = shares[..., 0, :]
        target[:, oh:] = 0
        for i in range(1, kh):
            target[:, i:i + oh] += shares[..., i, :]

    def _flat(self, g: np.ndarray, target: np.ndarray) -> None:
        """Stride 1: one GEMM to every offset's share, (kh*kw*C, pixels) channels first, then one add per offset."""
        conv, xp, m, o = self.conv, self.conv.xp, target.shape[0], g.shape[1]
        oh, ow, hp, wp = conv.oh, conv.ow, self.hp, self.wp
        gwide = self.gwide[:, :m]
        gwide[..., :ow] = g.reshape(m, oh, ow, o).transpose(3, 0, 1, 2)
        shares = xp.matmul(self.wk, gwide.reshape(o, -1)).reshape(conv.kh, conv.kw, conv.c, m, oh * wp)
        rows = self.rows[:, :m]
        rows[...] = 0
        for i in range(conv.kh):
            for j in range(conv.kw):
                rows[:, :, i * wp + j:i * wp + j + oh * wp] += shares[i, j]
        target[...] = rows[:, :, :hp * wp].reshape(conv.c, m, hp, wp).transpose(1, 2, 3, 0)

    def _col2im(self, dcols: np.ndarray, target: np.ndarray) -> None:
        """Sum patch gradients (kh*kw, m*OH*OW, C) back onto the (padded) images in target."""
        conv, st = self.conv, self.conv.stride
        target[...] = 0
        # One add per kernel offset: patches overlap, so offsets must accumulate.
        for i in range(conv.kh):
            for j in range(conv.kw):
                rows, cols = slice(i, i + st * (conv.oh - 1) + 1, st), slice(j, j + st * (conv.ow - 1) + 1, st)
                target[:, rows, cols] += dcols[i * conv.kw + j].reshape(-1, conv.oh, conv.ow, conv.c)

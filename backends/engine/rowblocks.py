"""Row blocks: a conv with few output channels computes B neighbouring output pixels of a row per im2col row."""
from __future__ import annotations

import numpy as np

# With O output channels the direct conv's GEMM is O columns wide, and OpenBLAS runs a (pixels, K) by (K, 6) product
# at a fraction of its speed. Taking B pixels of a row at once, an im2col row holds the kh x (B + kw - 1) input
# window they share, the GEMM is B*O wide against a block-Toeplitz weight (B shifted copies of the kernel), and its
# output is still NHWC. It multiplies (B + kw - 1) / kw times the FLOPs, the extra ones by zeros, and copies
# kw*B / (B + kw - 1) times fewer values into im2col. Measured here, im2col, forward GEMM and weight-gradient GEMM
# of one 1 MiB slice, against B = 1: lenet5's first conv (C 1 -> O 6, 5 x 5) 0.55x the time with B = 4;
# C 1 -> 4 0.7x (5 x 5) and 1.0x (3 x 3); C 3 -> 4 0.5-0.7x; C 8 -> 4 0.4-0.65x; but C 1 -> 8 and 16 no faster
# or slower (1.0-1.5x), C 3 or 8 -> 8 0.7-0.95x, and C 6 -> 16 (lenet5's second) 0.94x. So up to MAX_O output
# channels, and B the divisor of OW (2 to 8) that brings B*O nearest WIDTH.
MAX_O = 6
WIDTH = 24
# And up to WIDE_MAX_O where an im2col row, kh*kw*C values, is at least WIDE_WINDOW long: the copy saved is then
# the larger part. Measured later, forward and backward of 64 images on 28 x 28 ("same" padding) on two workers,
# B = 2 against none: C 1 -> 8 (7 x 7) 0.69-0.70x, C 1 -> 16 (7 x 7) 0.84x, C 2 -> 8 (7 x 7) 0.87x, C 3 -> 8 (3 x 3)
# 0.78x, C 3 -> 8 (5 x 5) 0.83x, C 6 -> 16 (5 x 5) 0.87x, C 8 -> 8 (5 x 5) 0.72x, C 4 -> 12 (5 x 5) 0.90x; but
# C 1 -> 8 (5 x 5) 1.09x and (3 x 3) 1.23x, windows of 25 and 9. In steps: wide7 0.90x, lenet5 and sigm 1.00x.
WIDE_MAX_O = 16
WIDE_WINDOW = 27


def block_size(o: int, ow: int, stride: int, window: int = 0) -> int:
    """B for a conv with o output channels, ow output columns, this stride and kh*kw*C window; 1: no row blocks."""
    if stride != 1 or o > (WIDE_MAX_O if window >= WIDE_WINDOW else MAX_O):
        return 1
    fits = [b for b in range(2, 9) if ow % b == 0]
    return min(fits, key=lambda b: abs(b * o - WIDTH)) if fits else 1


def widen(w: np.ndarray, block: int) -> np.ndarray:
    """(kh*(B + kw - 1)*C, B*O) block-Toeplitz matrix: row (i, j, c), column (b, o) is w[o, c, i, j - b], else 0."""
    o, c, kh, kw = w.shape
    wide = np.zeros((kh, block + kw - 1, c, block, o), dtype=w.dtype)
    for b in range(block):
        wide[:, b:b + kw, :, b] = w.transpose(2, 3, 1, 0)
    return wide.reshape(-1, block * o)


def fold(gwide: np.ndarray, block: int, kh: int, kw: int, c: int) -> np.ndarray:
    """The (O, kh*kw*C + 1) weight and bias gradient from the widened one, (B*O, kh*(B + kw - 1)*C + 1)."""
    o = gwide.shape[0] // block
    parts = gwide[:, :-1].reshape(block, o, kh, block + kw - 1, c)
    folded = np.empty((o, kh * kw * c + 1), dtype=gwide.dtype)
    w = folded[:, :-1].reshape(o, kh, kw, c)
    w[...] = parts[0, :, :, :kw]
    for b in range(1, block):  # each pixel of the block saw the kernel shifted b columns along
        w += parts[b, :, :, b:b + kw]
    folded[:, -1] = gwide[:, -1].reshape(block, o).sum(axis=0)
    return folded

"""Seeded random translations, made once per epoch by the harness so every backend sees the same images."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def random_shift(x: np.ndarray, max_shift: int, seed: int, epoch: int) -> np.ndarray:
    """NCHW images each moved by up to max_shift pixels in y and x; the border is filled with x's minimum."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    rng = np.random.default_rng((seed, epoch, 1))  # a stream apart from batch_order's
    s = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=x.min())
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2s+1, 2s+1, H, W), a view
    dy, dx = rng.integers(0, 2 * s + 1, n), rng.integers(0, 2 * s + 1, n)
    return windows[np.arange(n), :, dy, dx]

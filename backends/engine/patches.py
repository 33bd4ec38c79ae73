"""The windows of an NHWC image that a conv multiplies, as one strided view: im2col without a copy."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.xp import module_of


def patches(xpad: np.ndarray, kh: int, kw: int, stride: int, oh: int, ow: int, block: int = 1) -> np.ndarray:
    """The (m, OH, OW, kh, kw, C) view of padded NHWC xpad whose [n, r, c] is output pixel (r, c)'s patch.

    With block B (stride 1), (m, OH, OW/B, kh, B + kw - 1, C): [n, r, q] is the window of pixels qB to qB + B - 1."""
    sn, sh, sw, sc = xpad.strides
    shape = (xpad.shape[0], oh, ow // block, kh, kw + block - 1, xpad.shape[3])
    strides = (sn, sh * stride, sw * stride * block, sh, sw, sc)
    return module_of(xpad).lib.stride_tricks.as_strided(xpad, shape, strides)

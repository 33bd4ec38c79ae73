"""2-D convolution as im2col plus one BLAS matmul, and its col2im backward."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backends.engine.tensor import Tensor


def conv2d(x: Tensor, w: Tensor, b: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Cross-correlate NCHW x with w (out, in, kh, kw), add b (out,); zero padding on all sides."""
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    assert c == c_w, f"conv2d: input has {c} channels, weight expects {c_w}"
    cols, oh, ow = im2col(pad(x.data, padding), kh, kw, stride)  # (N*OH*OW, C*kh*kw)
    w2 = w.data.reshape(o, c * kh * kw)
    y = cols @ w2.T  # the one matmul: (N*OH*OW, O)
    y += b.data
    # Rows are (n, oh, ow), so the result is NHWC in memory; viewed as NCHW without a copy.
    out = Tensor(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2), _prev=(x, w, b), _op="conv2d")

    def _backward(g):
        # A free view when the gradient kept the NHWC memory order of the output.
        g = g.transpose(0, 2, 3, 1).reshape(n * oh * ow, o)
        if w.requires_grad:
            w.accumulate((g.T @ cols).reshape(w.shape))
        if b.requires_grad:
            b.accumulate(g.sum(axis=0))
        if x.requires_grad:
            dcols = (g @ w2).reshape(n, oh, ow, c, kh, kw)
            x.accumulate(col2im(dcols, x.shape, stride, padding))
    out._backward = _backward
    return out


def pad(x: np.ndarray, padding: int) -> np.ndarray:
    """x with `padding` zeros around its two spatial axes."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    xp[:, :, padding:padding + h, padding:padding + w] = x
    return xp


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int) -> tuple[np.ndarray, int, int]:
    """Every kh x kw patch of padded NCHW xp as one row: (N*OH*OW, C*kh*kw), with OH and OW."""
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # (N,C,OH,OW,kh,kw), a view
    n, c, oh, ow = windows.shape[:4]
    # The reshape is the one copy: patches laid out row by row, ready for BLAS.
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    return cols, oh, ow


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], stride: int, padding: int) -> np.ndarray:
    """Sum patch gradients (N, OH, OW, C, kh, kw) back onto the NCHW input they were cut from."""
    n, oh, ow, c, kh, kw = dcols.shape
    _, _, h, w = x_shape
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=dcols.dtype)
    # One vectorised add per kernel offset; patches overlap, so offsets must accumulate.
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            dxp[:, :, rows, cols] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, padding:padding + h, padding:padding + w]

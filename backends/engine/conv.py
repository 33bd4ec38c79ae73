"""2-D convolution as im2col plus one BLAS matmul, and its col2im backward."""
from __future__ import annotations

import numpy as np

from backends.engine.tensor import Tensor


def conv2d(x: Tensor, w: Tensor, b: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Cross-correlate NCHW x with w (out, in, kh, kw), add b (out,); zero padding on all sides."""
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    assert c == c_w, f"conv2d: input has {c} channels, weight expects {c_w}"
    k = c * kh * kw
    cols, oh, ow = im2col(pad(x.data, padding), kh, kw, stride)  # (N*OH*OW, C*kh*kw + 1), last column ones
    # The bias rides in the matmul as one more weight column against the ones column of cols:
    # one BLAS call instead of a matmul and a separate pass over the large output to add b.
    wb = np.empty((o, k + 1), dtype=w.dtype)
    wb[:, :k] = w.data.reshape(o, k)
    wb[:, k] = b.data
    y = cols @ wb.T  # the one matmul: (N*OH*OW, O)
    # Rows are (n, oh, ow), so the result is NHWC in memory; viewed as NCHW without a copy.
    out = Tensor(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2), _prev=(x, w, b), _op="conv2d")

    def _backward(g):
        # A free view when the gradient kept the NHWC memory order of the output.
        g = g.transpose(0, 2, 3, 1).reshape(n * oh * ow, o)
        if w.requires_grad or b.requires_grad:
            # Against the ones column, the same matmul sums g over rows: the bias gradient.
            gwb = g.T @ cols
            if w.requires_grad:
                w.accumulate(gwb[:, :k].reshape(w.shape))
            if b.requires_grad:
                b.accumulate(gwb[:, k].copy())
        if x.requires_grad:
            dcols = (g @ wb[:, :k]).reshape(n, oh, ow, c, kh, kw)
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
    """Every kh x kw patch of padded NCHW xp as one row, then a ones column: (N*OH*OW, C*kh*kw + 1), OH, OW."""
    n, c, h, w = xp.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = np.empty((n, oh, ow, c * kh * kw + 1), dtype=xp.dtype)
    cols[..., -1] = 1
    patches = cols[..., :-1].reshape(n, oh, ow, c, kh, kw)  # a view: rows laid out for BLAS
    # One strided copy per kernel offset, col2im's loop run forwards; about twice as fast as
    # copying a 6-d sliding_window_view in one go, whose innermost run is only kw long.
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols_ = slice(j, j + stride * (ow - 1) + 1, stride)
            patches[..., i, j] = xp[:, :, rows, cols_].transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, -1), oh, ow


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

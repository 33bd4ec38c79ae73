"""2-D convolution as im2col plus batched BLAS matmuls, and its col2im backward."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of


Pads = tuple[int, int, int, int]  # zeros (top, bottom, left, right); an int n means n on every side


def conv2d(x: Tensor, w: Tensor, b: Tensor, stride: int = 1, padding: int | Pads = 0) -> Tensor:
    """Cross-correlate NCHW x with w (out, in, kh, kw), add b (out,); zero padding of `padding`."""
    check_channels(x, w)
    xp = module_of(w.data)
    n, o = x.shape[0], w.shape[0]
    cols, oh, ow = im2col(pad(x.data, padding), *w.shape[2:], stride)  # (N, C*kh*kw + 1, OH*OW)
    wb = weight_with_bias(w, b)
    # One (O, K+1) @ (K+1, OH*OW) product per image: the result is NCHW as it comes, no transpose.
    y = xp.matmul(wb, cols).reshape(n, o, oh, ow)
    out = Tensor(y, _prev=(x, w, b), _op="conv2d")

    def _backward(g):
        grads = ConvGrads(x, w, b, wb, stride, padding)
        grads.add(slice(None), g, cols)
        grads.finish()
    out._backward = _backward
    return out


class ConvGrads:
    """conv2d's gradients, gathered a slice of images at a time; the products per image are the same either way."""

    def __init__(self, x: Tensor, w: Tensor, b: Tensor, wb: np.ndarray, stride: int, padding: int | Pads):
        self.x, self.w, self.b, self.wb, self.stride, self.padding = x, w, b, wb, stride, padding
        xp = module_of(wb)
        n = x.shape[0]
        # Weight (and, against the ones row of cols, bias) gradient products per image, summed at the end.
        self.parts = xp.empty((n, *wb.shape), dtype=wb.dtype) if w.requires_grad or b.requires_grad else None
        self.dx = xp.empty(x.shape, dtype=wb.dtype) if x.requires_grad else None

    def add(self, s: slice, g: np.ndarray, cols: np.ndarray) -> None:
        """The gradient g (m, O, OH, OW) at the conv output of images s, and their im2col cols (m, K+1, OH*OW)."""
        xp = module_of(g)
        m, o, oh, ow = g.shape
        g = xp.ascontiguousarray(g).reshape(m, o, oh * ow)
        if self.parts is not None:
            # Per image, then summed: BLAS is about twice as fast on these blocks as on one long product.
            xp.matmul(g, cols.transpose(0, 2, 1), out=self.parts[s])
        if self.dx is not None:
            c, kh, kw = self.w.shape[1:]
            dcols = xp.matmul(self.wb[:, :-1].T, g).reshape(m, c, kh, kw, oh, ow)
            self.dx[s] = col2im(dcols, (m, *self.x.shape[1:]), self.stride, self.padding)

    def finish(self) -> None:
        """Accumulate the gradients into w, b and x."""
        if self.parts is not None:
            gwb = self.parts.sum(axis=0)
            if self.w.requires_grad:
                self.w.accumulate(gwb[:, :-1].reshape(self.w.shape))
            if self.b.requires_grad:
                self.b.accumulate(gwb[:, -1].copy())
        if self.dx is not None:
            self.x.accumulate(self.dx)


def check_channels(x: Tensor, w: Tensor) -> None:
    assert x.shape[1] == w.shape[1], f"conv2d: input has {x.shape[1]} channels, weight expects {w.shape[1]}"


def weight_with_bias(w: Tensor, b: Tensor) -> np.ndarray:
    """(O, C*kh*kw + 1): the bias rides in the matmul as one more weight column against a ones row of cols."""
    o = w.shape[0]
    wb = module_of(w.data).empty((o, w.data.size // o + 1), dtype=w.dtype)
    wb[:, :-1] = w.data.reshape(o, -1)
    wb[:, -1] = b.data
    return wb


def pads(padding: int | Pads) -> Pads:
    """(top, bottom, left, right) of an int or a 4-tuple."""
    return (padding,) * 4 if isinstance(padding, int) else tuple(padding)


def conv_out_size(x_shape: tuple[int, ...], kh: int, kw: int, stride: int, padding: int | Pads) -> tuple[int, int]:
    """(OH, OW) of a conv over x_shape."""
    top, bottom, left, right = pads(padding)
    h, w = x_shape[2] + top + bottom, x_shape[3] + left + right
    return (h - kh) // stride + 1, (w - kw) // stride + 1


def pad(x: np.ndarray, padding: int | Pads) -> np.ndarray:
    """x with zeros around its two spatial axes: `padding` on every side, or (top, bottom, left, right)."""
    top, bottom, left, right = pads(padding)
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    xpad = module_of(x).zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    xpad[:, :, top:top + h, left:left + w] = x
    return xpad


def im2col(xpad: np.ndarray, kh: int, kw: int, stride: int, pool: int = 1) -> tuple[np.ndarray, int, int]:
    """Each kh x kw patch of padded NCHW xpad as a column, and a ones row: (pool²N, C*kh*kw + 1, PH*PW), PH, PW."""
    # With pool = 1, block n is image n and PH, PW = OH, OW. With pool = p, the conv outputs are split by
    # their position in a p x p pooling window: block (a, b, n) holds the patches of outputs (p*r + a, p*s + b)
    # of image n, and PH, PW = OH // p, OW // p (outputs past the last whole window are left out), so that
    # conv2d_maxpool's matmul lays each window offset out as one contiguous block.
    n, c, h, w = xpad.shape
    ph, pw = ((h - kh) // stride + 1) // pool, ((w - kw) // stride + 1) // pool
    cols = module_of(xpad).empty((pool, pool, n, c * kh * kw + 1, ph, pw), dtype=xpad.dtype)
    cols[:, :, :, -1] = 1
    patches = cols[:, :, :, :-1].reshape(pool, pool, n, c, kh, kw, ph, pw)  # a view
    # One strided copy per kernel offset, each contiguous along the output rows it writes.
    for i in range(kh):
        for j in range(kw):
            # Input rows read by conv outputs 0 .. pool*ph - 1 at kernel row i, split as (r, a).
            src = xpad[:, :, i:i + stride * (pool * ph - 1) + 1:stride, j:j + stride * (pool * pw - 1) + 1:stride]
            patches[:, :, :, :, i, j] = src.reshape(n, c, ph, pool, pw, pool).transpose(3, 5, 0, 1, 2, 4)
    return cols.reshape(pool * pool * n, c * kh * kw + 1, ph * pw), ph, pw


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], stride: int, padding: int | Pads) -> np.ndarray:
    """Sum patch gradients (N, C, kh, kw, OH, OW) back onto the NCHW input they were cut from."""
    n, c, kh, kw, oh, ow = dcols.shape
    _, _, h, w = x_shape
    top, bottom, left, right = pads(padding)
    dxp = module_of(dcols).zeros((n, c, h + top + bottom, w + left + right), dtype=dcols.dtype)
    # One vectorised add per kernel offset; patches overlap, so offsets must accumulate.
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            dxp[:, :, rows, cols] += dcols[:, :, i, j]
    return dxp[:, :, top:top + h, left:left + w]

"""conv2d, relu and a non-overlapping maxpool2d fused into one op, bitwise the same as the three in turn."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.conv import (ConvGrads, Pads, check_channels, conv_out_size, im2col, pad,
                                         weight_with_bias)
from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of

# conv2d_maxpool works through the batch this many bytes of conv output at a time, so that each
# slice's conv output (and, backwards, its gradient) stays in cache between the passes over it:
# 1.4 -> 0.85 ms for the cnn's forward pool here, against whole-batch passes.
SLICE_BYTES = 1 << 20


def conv2d_maxpool(x: Tensor, w: Tensor, b: Tensor, stride: int, padding: int | Pads, size: int,
                   relu: bool = False) -> Tensor:
    """maxpool2d(conv2d(x, w, b, stride, padding), size) with windows `size` apart, then relu if asked.

    The ops in sequence, tie rules included (first max wins, relu'(0) = 0; relu commutes with max
    pooling exactly). Given the same conv outputs, the pooling and every gradient are bit for bit those
    of the unfused ops; the conv outputs themselves agree to rounding (BLAS may order a dot product
    differently in a differently shaped matmul), and exactly where that arithmetic is exact.
    Fused, because the conv can lay its output out so that each of the size*size window offsets is
    one contiguous block: pooling is then a few passes over contiguous arrays instead of strided
    ones, and the conv output is not kept for the backward pass.
    """
    check_channels(x, w)
    xp = module_of(w.data)
    n, o = x.shape[0], w.shape[0]
    xpad = pad(x.data, padding)
    kh, kw = w.shape[2:]
    # Block (a, b, n) of cols holds image n's patches for the conv outputs at (size*r + a, size*s + b);
    # conv outputs that no window covers are never computed.
    cols, ph, pw = im2col(xpad, kh, kw, stride, size)
    cols = cols.reshape(size * size, n, -1, ph * pw)
    wb = weight_with_bias(w, b)
    best = xp.empty((n, o, ph, pw), dtype=wb.dtype)
    arg = xp.empty((n, o, ph, pw), dtype=np.uint8)
    for s in image_slices(n, size * size * o * ph * pw * wb.itemsize, xp):
        y = xp.matmul(wb, cols[:, s]).reshape(size * size, -1, o, ph, pw)  # window offset, image, O, PH, PW
        max_over_offsets(y, best[s], arg[s], relu)
    del cols
    out = Tensor(best, _prev=(x, w, b), _op="conv2d_maxpool")
    oh, ow = conv_out_size(x.shape, kh, kw, stride, padding)

    def _backward(g):
        g = xp.ascontiguousarray(g)
        grads = ConvGrads(x, w, b, wb, stride, padding)
        # Conv outputs past the last whole window get no gradient: zeros, unless the windows tile them all.
        fresh = xp.empty if (ph * size, pw * size) == (oh, ow) else xp.zeros
        for s in image_slices(n, o * oh * ow * g.itemsize, xp):
            # The gradient at the conv output, in conv2d's own layout, and conv2d's own products on it:
            # the gradients are bitwise those of the unfused ops.
            m = len(arg[s])
            dy = fresh((m, o, oh, ow), dtype=g.dtype)
            won = xp.empty((m, o, ph, pw), dtype=bool)
            for k in range(size * size):
                a, c = divmod(k, size)
                xp.equal(arg[s], k + 1, out=won)
                xp.multiply(g[s], won, out=dy[:, :, a:ph * size:size, c:pw * size:size])
            grads.add(s, dy, im2col(xpad[s], kh, kw, stride)[0])
        grads.finish()
    out._backward = _backward
    return out


def max_over_offsets(y: np.ndarray, best: np.ndarray, arg: np.ndarray, relu: bool) -> None:
    """best = max over y's first axis (window offsets in row-major order), relu'd if asked; arg = 1 + the winner."""
    # Strictly greater, so on ties the earliest offset keeps the win (torch's rule). With relu, the
    # running max starts at 0 and arg at 0 ("no winner"): a window whose max is <= 0 outputs 0 and
    # passes no gradient, which is relu(max) with relu'(0) = 0.
    if relu:
        best[...], arg[...], first = 0, 0, 0
    else:
        best[...], arg[...], first = y[0], 1, 1
    xp = module_of(y)
    better = xp.empty(best.shape, dtype=bool)
    code = xp.empty_like(arg)
    for k in range(first, len(y)):
        xp.greater(y[k], best, out=better)
        # The winner is the last offset that beat the running max, hence arg = max(arg, code * better).
        xp.maximum(arg, xp.multiply(better.view(np.uint8), np.uint8(k + 1), out=code), out=arg)
        xp.maximum(best, y[k], out=best)  # maximum, not where(better): a NaN propagates


def image_slices(n: int, bytes_per_image: int, xp=np) -> list[slice]:
    """Consecutive slices of n images, about SLICE_BYTES each; one slice of all n off the CPU."""
    # The slices are for the CPU's cache; on a GPU they would only multiply kernel launches.
    step = max(1, SLICE_BYTES // bytes_per_image) if xp is np else max(n, 1)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]

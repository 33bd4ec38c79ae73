"""conv2d_maxpool: the fused conv [relu] maxpool must equal the unfused ops.

Bit for bit wherever the conv's arithmetic is exact (small integers: ties everywhere); otherwise BLAS may
round the conv's products differently for the differently shaped matmul, so values agree to rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from fwbench.backends.engine import Tensor, conv2d, conv2d_maxpool, maxpool2d, relu
from fwbench.backends.engine.conv import im2col

# (C, H, W, out channels, kernel, stride, padding, pool size): square and not, windows that cover the
# conv output exactly and ones that leave rows and columns out, strides and padding.
CASES = [(1, 8, 8, 3, 3, 1, 0, 2), (2, 9, 7, 4, 3, 1, 1, 2), (3, 11, 10, 2, 2, 2, 1, 2),
         (1, 10, 10, 2, 3, 1, 0, 3), (2, 7, 9, 3, 1, 1, 0, 3), (1, 6, 6, 2, 3, 1, 1, 1)]


def leaves(c, h, w, o, k, seed, ties: bool, dtype=np.float64):
    """x (no gradient) and w, b; with ties, few distinct values, so windows hold ties, zeros and all-negative runs."""
    rng = np.random.default_rng(seed)
    draw = (lambda *s: rng.integers(-1, 2, s).astype(dtype)) if ties else (lambda *s: rng.standard_normal(s).astype(dtype))
    x = Tensor(draw(3, c, h, w))
    wt = Tensor(draw(o, c, k, k), requires_grad=True)
    b = Tensor(np.zeros(o, dtype) if ties else draw(o), requires_grad=True)
    return x, wt, b


def run(fused: bool, x, w, b, stride, padding, size, with_relu, upstream_seed=5):
    for t in (x, w, b):
        t.zero_grad()
    if fused:
        out = conv2d_maxpool(x, w, b, stride, padding, size, with_relu)
    else:
        h = conv2d(x, w, b, stride, padding)
        out = maxpool2d(relu(h) if with_relu else h, size)
    r = np.random.default_rng(upstream_seed).standard_normal(out.shape).astype(out.dtype)
    (out * Tensor(r)).sum().backward()
    return out.data, w.grad, b.grad, x.grad


def fused_and_unfused(case, with_relu, ties, dtype):
    """(name, fused, unfused) for the output and the weight and bias gradients, dtypes and shapes checked."""
    c, h, wd, o, k, stride, padding, size = case
    x, w, b = leaves(c, h, wd, o, k, 0, ties, dtype)
    want = run(False, x, w, b, stride, padding, size, with_relu)
    got = run(True, x, w, b, stride, padding, size, with_relu)
    for name, g, e in zip(("value", "weight grad", "bias grad"), got, want):
        assert g.dtype == e.dtype == dtype and g.shape == e.shape, name
        yield name, g, e


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_equals_unfused_bit_for_bit_on_ties(case, with_relu, dtype):
    for name, got, want in fused_and_unfused(case, with_relu, True, dtype):
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_relu", [False, True])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_fused_equals_unfused_to_rounding(case, with_relu, dtype, rtol):
    for name, got, want in fused_and_unfused(case, with_relu, False, dtype):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=name)


@pytest.mark.parametrize("case", CASES[:3])
def test_input_gradient_when_needed(case):
    c, h, wd, o, k, stride, padding, size = case
    x, w, b = leaves(c, h, wd, o, k, 1, False)
    x.requires_grad = True
    want = run(False, x, w, b, stride, padding, size, True)
    got = run(True, x, w, b, stride, padding, size, True)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-13, atol=1e-13 * np.abs(want[3]).max())


def test_tie_goes_to_first_max_and_relu_at_zero_passes_nothing():
    # 1x1 conv with weight 1 and bias 0: the conv output is the input, so the windows are set directly.
    x = Tensor(np.array([[[[1.0, 5.0, 0.0, -2.0],
                           [5.0, 5.0, 0.0, 0.0],
                           [-1.0, -3.0, 2.0, 2.0],
                           [-1.0, -2.0, 2.0, 2.0]]]]))
    w, b = Tensor(np.ones((1, 1, 1, 1)), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    out = conv2d_maxpool(x, w, b, 1, 0, 2, relu=True)
    np.testing.assert_array_equal(out.data[0, 0], [[5.0, 0.0], [0.0, 2.0]])
    out.sum().backward()
    # d(loss)/dw = sum of the inputs that won a live window: 5 (the first of three fives) and 2 (the first of four).
    np.testing.assert_array_equal(w.grad.ravel(), [7.0])
    np.testing.assert_array_equal(b.grad, [2.0])


def test_nan_propagates_to_the_output():
    x = Tensor(np.array([[[[np.nan, 1.0], [2.0, 3.0]]]]))
    w, b = Tensor(np.ones((1, 1, 1, 1)), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    for with_relu in (False, True):
        assert np.isnan(conv2d_maxpool(x, w, b, 1, 0, 2, with_relu).data).all()


def test_im2col_pool_blocks_hold_each_window_offset():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 8))
    plain, oh, ow = im2col(x, 3, 2, 1)
    split, ph, pw = im2col(x, 3, 2, 1, pool=2)
    assert (oh, ow, ph, pw) == (7, 7, 3, 3)
    plain = plain.reshape(2, -1, oh, ow)
    split = split.reshape(2, 2, 2, -1, ph, pw)
    for a in range(2):
        for c in range(2):
            np.testing.assert_array_equal(split[a, c], plain[:, :, a:2 * ph:2, c:2 * pw:2])

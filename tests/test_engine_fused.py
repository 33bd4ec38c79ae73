"""The engine's fast paths against plain ones: fused activations, conv slices, and the numpy backend's fused plan.

Bit for bit where the arithmetic is the same (fused relu, small-integer inputs); otherwise within rounding, as
BLAS may order a dot product differently in a differently shaped matmul.
"""
from __future__ import annotations

import numpy as np
import pytest

from fwbench import models
from fwbench.backends.engine import (Tensor, avgpool2d, batchnorm, conv, conv2d, dense, input_gradient, maxpool2d, norm,
                                     parallel, relu, sigmoid, tanh)
from fwbench.backends.engine.activations import ACTIVATIONS
from fwbench.backends.engine.layout import to_canonical
from fwbench.backends.numpy_backend import NumpyBackend, plan

# (N, C, H, W, out channels, kernel, stride, padding): square and not, stride larger than the kernel, one-pixel
# outputs, a batch of one, asymmetric "same"-style padding, and enough channels for the input gradient as a conv.
CASES = [(3, 1, 8, 8, 3, 3, 1, 0), (2, 2, 9, 7, 4, 3, 1, 1), (2, 3, 11, 10, 2, 2, 3, (1, 0, 0, 1)),
         (1, 2, 3, 3, 2, 3, 1, 0), (4, 3, 5, 5, 2, 2, 4, 0), (1, 1, 1, 1, 2, 1, 1, 0),
         (2, 2, 6, 6, 2, 3, 2, (0, 1, 0, 1)), (2, 16, 6, 5, 3, 3, 1, (1, 1, 0, 2)), (1, 17, 4, 4, 2, 3, 1, 0)]


def leaves(n, c, h, w, o, k, ties: bool, x_grad: bool = True, dtype=np.float64, seed=0):
    """NHWC x, w, b; with ties, few distinct small integers, so relu sees exact zeros and the arithmetic is exact."""
    rng = np.random.default_rng(seed)
    if ties:
        def draw(*s):
            return rng.integers(-1, 2, s).astype(dtype)
    else:
        def draw(*s):
            return rng.standard_normal(s).astype(dtype)
    return Tensor(draw(n, h, w, c), x_grad), Tensor(draw(o, c, k, k), True), Tensor(draw(o), True)


def grads_of(build, leaves_, seed=5, integers=False):
    """Output and gradients of sum(build() * R) for a fixed random R, of small integers if asked."""
    for t in leaves_:
        t.zero_grad()
    out = build()
    rng = np.random.default_rng(seed)
    r = (rng.integers(-2, 3, out.shape) if integers else rng.standard_normal(out.shape)).astype(out.dtype)
    (out * Tensor(r)).sum().backward()
    return [out.data] + [t.grad for t in leaves_]


def naive_conv(x, w, b, stride, padding):
    """The plain loop over NCHW: one dot product per output value."""
    top, bottom, left, right = (padding,) * 4 if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, o, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    oh, ow = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), x.dtype)
    for i, j, r, c in np.ndindex(n, o, oh, ow):
        out[i, j, r, c] = (xp[i, :, r * stride:r * stride + kh, c * stride:c * stride + kw] * w[j]).sum() + b[j]
    return out


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_relu_fused_equals_relu_of_conv_bit_for_bit(case, dtype):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, True, dtype=dtype)
    fused = grads_of(lambda: conv2d(x, wt, b, stride, padding, relu=True), (x, wt, b))
    plain = grads_of(lambda: relu(conv2d(x, wt, b, stride, padding)), (x, wt, b))
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), fused, plain):
        assert got.dtype == want.dtype == dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


PLAIN_ACTS = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid}
PLAIN_POOLS = {"max": maxpool2d, "avg": avgpool2d}


@pytest.mark.parametrize("act", [None, "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("pool", [("max", 2, 2), ("avg", 2, 2), ("avg", 3, 1), ("max", 3, 2), None])
@pytest.mark.parametrize("relu_after", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[7]])
def test_conv_with_activation_and_pool_equals_the_plain_ops_bit_for_bit(case, act, pool, relu_after):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, ties=act == "relu")
    conv_out = conv2d(x, wt, b, stride, padding)
    if pool and min(conv_out.shape[1:3]) < pool[1]:
        pytest.skip("the conv's output is smaller than the window")

    def plain():
        out = conv2d(x, wt, b, stride, padding)
        out = PLAIN_ACTS[act](out) if act else out
        out = PLAIN_POOLS[pool[0]](out, pool[1], pool[2]) if pool else out
        return relu(out) if relu_after else out
    fused = grads_of(lambda: conv2d(x, wt, b, stride, padding, relu=relu_after, pool=pool, act=act), (x, wt, b))
    for got, want in zip(fused, grads_of(plain, (x, wt, b))):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("pool", [None, ("avg", 2, 2), ("max", 2, 2)])
@pytest.mark.parametrize("relu_after", [False, True])
def test_the_backward_pass_leaves_the_incoming_gradient_as_it_was(act, pool, relu_after):
    # The activation's gradient is taken in place only in arrays the conv made itself: the incoming one may be
    # held by other tensors too.
    n, c, h, w, o, k, stride, padding = CASES[0]
    x, wt, b = leaves(n, c, h, w, o, k, ties=False)
    y = conv2d(x, wt, b, stride, padding, relu=relu_after, pool=pool, act=act)
    g = np.random.default_rng(3).standard_normal(y.shape)
    before = g.copy()
    y._backward(g)
    np.testing.assert_array_equal(g, before)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_an_activations_gradient_into_out_or_in_place_equals_a_new_one_bit_for_bit(name):
    rng = np.random.default_rng(4)
    y = rng.standard_normal(1000).astype(np.float32)
    y[::7] = 0  # relu'(0) = 0
    g = rng.standard_normal(1000).astype(np.float32)
    grad = ACTIVATIONS[name][1]
    want = grad(g, y)
    out = np.empty_like(g)
    assert grad(g, y, out) is out
    np.testing.assert_array_equal(out, want)
    assert grad(g, y, g) is g
    np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("after", ["relu", "tanh"])
@pytest.mark.parametrize("pool", [("max", 2, 2), ("max", 3, 2), ("max", 3, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[7]])
def test_an_activation_after_the_max_pool_equals_it_before_bit_for_bit(case, after, pool, dtype):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, ties=False, dtype=dtype)
    if min(conv2d(x, wt, b, stride, padding).shape[1:3]) < pool[1]:
        pytest.skip("the conv's output is smaller than the window")

    def plain():
        return maxpool2d(PLAIN_ACTS[after](conv2d(x, wt, b, stride, padding)), pool[1], pool[2])
    value, *grads = grads_of(lambda: conv2d(x, wt, b, stride, padding, pool=pool, after=after), (x, wt, b))
    want_value, *want = grads_of(plain, (x, wt, b))
    np.testing.assert_array_equal(value, want_value)
    # Where overlapping windows share a cell, its gradient is a sum of each window's times tanh', not the sum times
    # it: a rounding apart, relative to the gradient's scale (sums that cancel leave a cell far smaller).
    rounding = 16 * np.finfo(dtype).eps if after == "tanh" and pool[2] < pool[1] else 0
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=0, atol=rounding * np.abs(expected).max())


def test_tanh_after_the_max_pool_sends_a_tie_of_tanh_to_the_largest_input():
    """Two inputs that round to the same tanh: pooled first, the gradient goes to the larger, of the same value."""
    z1 = np.float32(3)
    z2 = np.nextafter(z1, np.float32(4))
    assert z1 < z2 and np.tanh(z1) == np.tanh(z2)
    x = np.array([z1, z2, 0, 0], np.float32).reshape(1, 2, 2, 1)
    first, after = Tensor(x.copy(), True), Tensor(x.copy(), True)
    maxpool2d(tanh(first), 2).sum().backward()
    tanh(maxpool2d(after, 2)).sum().backward()
    assert first.grad.ravel()[0] == after.grad.ravel()[1] == 1 - np.tanh(z1) ** 2
    assert first.grad.ravel()[1] == after.grad.ravel()[0] == 0


@pytest.mark.parametrize("case", CASES)
def test_conv_equals_the_naive_loop_on_edge_shapes(case):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, False)
    want = naive_conv(to_canonical(x.data), wt.data, b.data, stride, padding)
    np.testing.assert_allclose(to_canonical(conv2d(x, wt, b, stride, padding).data), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_conv_in_slices_of_one_image_equals_one_slice(case, monkeypatch):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, False, dtype=np.float32)
    whole = grads_of(lambda: conv2d(x, wt, b, stride, padding, relu=True), (x, wt, b))
    monkeypatch.setattr(conv, "SLICE_BYTES", 1)  # one image a slice
    sliced = grads_of(lambda: conv2d(x, wt, b, stride, padding, relu=True), (x, wt, b))
    # Each value is the same dot product either way; only the weight and bias gradients sum over the slices in a
    # different order, within float32 rounding of their size.
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), sliced, whole):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)


def test_conv_in_slices_is_exact_on_small_integers(monkeypatch):
    x, wt, b = leaves(5, 3, 9, 8, 4, 3, True, dtype=np.float32)
    whole = grads_of(lambda: conv2d(x, wt, b, 2, (1, 2, 0, 1)), (x, wt, b), integers=True)
    monkeypatch.setattr(conv, "SLICE_BYTES", 1)
    for got, want in zip(grads_of(lambda: conv2d(x, wt, b, 2, (1, 2, 0, 1)), (x, wt, b), integers=True), whole):
        np.testing.assert_array_equal(got, want)


def test_conv_relu_passes_no_gradient_at_an_output_of_exactly_zero():
    x = Tensor(np.ones((1, 2, 2, 1)))
    w, b = Tensor(np.ones((2, 1, 2, 2)), True), Tensor(np.array([-4.0, -3.0]), True)  # outputs exactly 0 and 1
    out = conv2d(x, w, b, relu=True)
    out.sum().backward()
    np.testing.assert_array_equal(out.data.ravel(), [0.0, 1.0])
    np.testing.assert_array_equal(b.grad, [0.0, 1.0])


@pytest.mark.parametrize("ties", [True, False])
def test_dense_relu_fused_equals_relu_of_dense_bit_for_bit(ties):
    rng = np.random.default_rng(3)
    draw = (lambda *s: rng.integers(-1, 2, s).astype(float)) if ties else (lambda *s: rng.standard_normal(s))
    x, w, b = Tensor(draw(6, 5), True), Tensor(draw(5, 4), True), Tensor(draw(4), True)
    fused = grads_of(lambda: dense(x, w, b, relu=True), (x, w, b))
    plain = grads_of(lambda: relu(dense(x, w, b)), (x, w, b))
    for got, want in zip(fused, plain):
        np.testing.assert_array_equal(got, want)


def test_nan_propagates_through_the_fused_relu():
    x, w, b = leaves(1, 1, 4, 4, 2, 3, False)
    x.data[0, 1, 1, 0] = np.nan
    assert np.isnan(conv2d(x, w, b, relu=True).data).any()
    assert np.isnan(maxpool2d(conv2d(x, w, b, relu=True), 2).data).all()


def naive_input_grad(g, w, shape, stride, padding):
    """The plain loop over NCHW: each output's gradient times the kernel, scattered onto the input it read."""
    top, bottom, left, right = (padding,) * 4 if isinstance(padding, int) else padding
    n, c, h, wd = shape
    dx = np.zeros((n, c, h + top + bottom, wd + left + right), g.dtype)
    kh, kw = w.shape[2:]
    for i, j, r, col in np.ndindex(n, w.shape[0], *g.shape[2:]):
        dx[i, :, r * stride:r * stride + kh, col * stride:col * stride + kw] += g[i, j, r, col] * w[j]
    return dx[:, :, top:top + h, left:left + wd]


# Every stride-1 conv by kernel rows, their shares summed in NHWC or channels first; every one by flat rows.
PATHS = {"rows": (10 ** 9, 0), "rows-channels-first": (10 ** 9, 10 ** 9), "flat": (0, 0)}


def take_path(name, monkeypatch):
    rows_when, channels_first = PATHS[name]
    monkeypatch.setattr(input_gradient, "ROWS_WHEN", rows_when)
    monkeypatch.setattr(input_gradient, "ROWS_CHANNELS_FIRST", channels_first)


@pytest.mark.parametrize("two_a_slice", [False, True])  # one slice of the batch; slices of 2, the last one shorter
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_input_gradient_equals_the_naive_loop(case, path, two_a_slice, monkeypatch):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, True)
    take_path(path, monkeypatch)
    if two_a_slice:
        monkeypatch.setattr(conv, "image_slices", lambda n, _, xp=np: parallel.slices(n, 2, xp))
    out, dx = grads_of(lambda: conv2d(x, wt, b, stride, padding), (x,), integers=True)
    r = np.random.default_rng(5).integers(-2, 3, out.shape).astype(out.dtype)  # grads_of's R
    want = naive_input_grad(to_canonical(r), wt.data, to_canonical(x.data).shape, stride, padding)
    np.testing.assert_array_equal(to_canonical(dx), want)  # small integers: exact whatever the order


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kernel", [(2, 4), (4, 1)])
def test_input_gradient_of_a_rectangular_kernel_equals_the_naive_loop(kernel, path, monkeypatch):
    rng = np.random.default_rng(2)
    x = Tensor(rng.integers(-1, 2, (2, 6, 7, 3)).astype(np.float64), True)
    wt, b = Tensor(rng.integers(-1, 2, (5, 3, *kernel)).astype(np.float64), True), Tensor(np.zeros(5), True)
    take_path(path, monkeypatch)
    out, dx = grads_of(lambda: conv2d(x, wt, b), (x,), integers=True)
    r = np.random.default_rng(5).integers(-2, 3, out.shape).astype(out.dtype)  # grads_of's R
    want = naive_input_grad(to_canonical(r), wt.data, to_canonical(x.data).shape, 1, 0)
    np.testing.assert_array_equal(to_canonical(dx), want)


@pytest.mark.parametrize("case", CASES[:3])
def test_im2col_kept_from_the_forward_pass_equals_im2col_cut_again(case, monkeypatch):
    n, c, h, w, o, k, stride, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, False)
    results = []
    for keep in (1 << 40, 0):
        monkeypatch.setattr(conv, "KEEP_COLS_BYTES", keep)
        results.append(grads_of(lambda: conv2d(x, wt, b, stride, padding), (x, wt, b)))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_one_weight_in_two_convs_keeps_two_blocks():
    x, wt, b = leaves(2, 3, 6, 6, 4, 3, False)
    x2 = Tensor(x.data[::-1].copy(), True)
    both = grads_of(lambda: conv2d(x, wt, b) + conv2d(x2, wt, b), (x, x2, wt, b))
    first = grads_of(lambda: conv2d(x, wt, b), (x, wt, b))
    second = grads_of(lambda: conv2d(x2, wt, b), (x2, wt, b))
    np.testing.assert_allclose(both[3], first[2] + second[2], rtol=1e-12)  # the weight's gradient: both paths


def test_the_kept_block_is_reused_from_step_to_step():
    x, wt, b = leaves(2, 3, 6, 6, 4, 3, False)
    grads_of(lambda: conv2d(x, wt, b), (x, wt, b))
    block = conv._kept[wt][0]
    grads_of(lambda: conv2d(x, wt, b), (x, wt, b))
    assert conv._kept[wt][0] is block and not conv._kept[wt][1]


def test_dense_weight_gradient_keeps_the_weights_memory_order():
    rng = np.random.default_rng(4)
    x, w = rng.integers(-2, 3, (5, 7)).astype(np.float64), rng.integers(-2, 3, (7, 3)).astype(np.float64)
    results = []
    for weight in (w, np.asfortranarray(w)):
        leaves_ = (Tensor(x, True), Tensor(weight, True), Tensor(np.zeros(3), True))
        results.append(grads_of(lambda: dense(*leaves_, relu=True), leaves_, integers=True))
    assert results[1][2].flags.f_contiguous and results[0][2].flags.c_contiguous
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)  # small integers: exact in either order


# The direct path (5 x 5, 8 -> 8) and Winograd's (3 x 3, 16 -> 16), on 12 x 12: a max pool with an activation
# before it (kept at full size), an overlapping max pool with one after it, both, and an average pool.
RUN_CASES = [(5, {"pool": ("max", 2, 2), "act": "tanh"}), (5, {"pool": ("max", 3, 2), "after": "relu"}),
             (3, {"pool": ("max", 2, 2), "act": "relu", "after": "tanh"}), (3, {"pool": ("avg", 2, 2)})]


@pytest.mark.parametrize("kernel, epilogue", RUN_CASES)
def test_epilogue_over_runs_of_slices_equals_one_run_a_slice(kernel, epilogue, monkeypatch):
    from fwbench.backends.engine import epilogue as epilogues, winograd
    c = 8 if kernel == 5 else 16
    x, wt, b = leaves(5, c, 12, 12, c, kernel, True, dtype=np.float32)
    monkeypatch.setattr(conv, "SLICE_BYTES", 1)  # a slice per image
    monkeypatch.setattr(winograd, "SLICE_BYTES", 1)
    assert winograd.applies(x.data, wt.shape, 1, (1,) * 4) == (kernel == 3)
    runs = []
    for run_bytes in (1, 1 << 40):  # a run per slice; all five slices in one run
        monkeypatch.setattr(epilogues, "RUN_BYTES", run_bytes)
        runs.append(grads_of(lambda: conv2d(x, wt, b, 1, 1, **epilogue), (x, wt, b), integers=True))
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), *runs):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_with_its_activation_equals_the_activation_after_it_bit_for_bit(act, training, monkeypatch):
    monkeypatch.setattr(norm, "CHUNK_BYTES", 1)  # a chunk an image
    rng = np.random.default_rng(6)
    x = Tensor(rng.integers(-1, 2, (3, 4, 5, 2)).astype(float), True)  # ties: batch norm outputs exactly 0
    gamma, beta = Tensor(np.array([1.0, 2.0]), True), Tensor(np.zeros(2), True)
    running = (np.zeros(2), np.ones(2))
    ops = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid}
    fused = grads_of(lambda: batchnorm(x, gamma, beta, 1e-5, running, training, act=act), (x, gamma, beta))
    plain = grads_of(lambda: ops[act](batchnorm(x, gamma, beta, 1e-5, running, training)), (x, gamma, beta))
    assert (fused[0] == 0).any() or act != "relu"
    for got, want in zip(fused, plain):
        np.testing.assert_array_equal(got, want)


def test_the_plan_fuses_batch_norm_and_its_activation_and_trains_as_unfused():
    spec = models.parse({"name": "t", "input": [1, 6, 6], "classes": 3, "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "batchnorm"}, {"type": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 3}]})
    fused, plain = NumpyBackend(spec, dtype="float64"), NumpyBackend(spec, dtype="float64")
    plain._steps = plan(spec, plain.params, fuse=False)
    assert len(fused._steps) == len(plain._steps) - 1
    x, y = np.random.default_rng(0).standard_normal((4, 1, 6, 6)), np.array([0, 1, 2, 1])
    (loss_a, grads_a), (loss_b, grads_b) = fused.loss_and_grads(x, y), plain.loss_and_grads(x, y)
    assert loss_a == loss_b
    for k in grads_a:
        np.testing.assert_array_equal(grads_a[k], grads_b[k])

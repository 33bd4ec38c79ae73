"""The NumPy engine: every op against finite differences and naive loops, plus its conventions.

Images are channels last (NHWC) inside the engine; the naive loops here are written for canonical NCHW."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from fwbench.backends import engine
from fwbench.backends.engine import Tensor, conv2d, cross_entropy, dense, flatten, maxpool2d, relu
from fwbench.backends.engine.layout import to_canonical

RNG = np.random.default_rng(0)


def param(*shape) -> Tensor:
    """A float64 leaf that needs a gradient, away from relu's kink and free of max-pool ties."""
    return Tensor(RNG.standard_normal(shape), requires_grad=True)


def weighted_sum(t: Tensor, seed: int = 1) -> Tensor:
    """Scalar sum(t * R) with fixed random R, so every output element gets its own upstream gradient."""
    r = np.random.default_rng(seed).standard_normal(t.shape)
    return (t * Tensor(r)).sum()


def numeric_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of scalar f() with respect to every element of a (perturbed in place)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        hi = f()
        a[i] = old - eps
        lo = f()
        a[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def assert_grads(build, *leaves: Tensor, tol: float = 1e-6) -> None:
    """backward() of the scalar build() matches central differences for every leaf."""
    for t in leaves:
        t.zero_grad()
    build().backward()
    for t in leaves:
        num = numeric_grad(lambda: float(build().data), t.data)
        err = np.abs(t.grad - num).max() / max(np.abs(t.grad).max() + np.abs(num).max(), 1e-12)
        assert err < tol, f"relative gradient error {err:.2e} for a leaf of shape {t.shape}"


def naive_conv(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i, j, k, m in np.ndindex(n, o, oh, ow):
        patch = xp[i, :, k * stride:k * stride + kh, m * stride:m * stride + kw]
        out[i, j, k, m] = (patch * w[j]).sum() + b[j]
    return out


def naive_pool(x, size, stride):
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.zeros((n, c, oh, ow))
    for i, j, k, m in np.ndindex(n, c, oh, ow):
        out[i, j, k, m] = x[i, j, k * stride:k * stride + size, m * stride:m * stride + size].max()
    return out


CONV_CASES = [(1, 0), (2, 1), (2, 0), (1, 2), (3, 1)]  # (stride, padding)


@pytest.mark.parametrize("stride,padding", CONV_CASES)
def test_conv2d_matches_naive_loop(stride, padding):
    x, w, b = param(2, 7, 6, 3), param(4, 3, 3, 2), param(4)
    out = conv2d(x, w, b, stride, padding)
    want = naive_conv(to_canonical(x.data), w.data, b.data, stride, padding)
    np.testing.assert_allclose(to_canonical(out.data), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,padding", CONV_CASES)
def test_conv2d_gradients(stride, padding):
    x, w, b = param(2, 7, 6, 3), param(4, 3, 3, 2), param(4)
    assert_grads(lambda: weighted_sum(conv2d(x, w, b, stride, padding)), x, w, b)


def test_conv2d_skips_input_gradient_when_not_needed():
    x, w, b = Tensor(RNG.standard_normal((2, 5, 5, 1))), param(3, 1, 3, 3), param(3)
    weighted_sum(conv2d(x, w, b)).backward()
    assert x.grad is None and w.grad is not None


def test_relu_gradient():
    x = param(3, 4, 5)
    x.data[np.abs(x.data) < 0.1] = 0.5  # finite differences are only valid away from the kink
    assert_grads(lambda: weighted_sum(relu(x)), x)


def test_relu_at_zero_has_zero_gradient():
    x = Tensor(np.array([-1.0, 0.0, 1.0]), requires_grad=True)
    out = relu(x)
    out.sum().backward()
    np.testing.assert_array_equal(out.data, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0])


POOL_CASES = [(2, 2, 6, 6), (3, 2, 7, 9), (2, 1, 5, 4), (3, 3, 8, 7), (2, 2, 7, 5), (2, 3, 8, 7)]  # size, stride, H, W


@pytest.mark.parametrize("size,stride,h,w", POOL_CASES)
def test_maxpool2d_matches_naive_loop(size, stride, h, w):
    x = param(2, h, w, 3)
    want = naive_pool(to_canonical(x.data), size, stride)
    np.testing.assert_array_equal(to_canonical(maxpool2d(x, size, stride).data), want)


@pytest.mark.parametrize("size,stride,h,w", POOL_CASES)
def test_maxpool2d_gradients(size, stride, h, w):
    x = param(2, h, w, 3)
    assert_grads(lambda: weighted_sum(maxpool2d(x, size, stride)), x)


def test_maxpool2d_tie_goes_to_first_max_in_window():
    x = Tensor(np.array([[[1.0, 5.0], [5.0, 5.0]]])[..., None], requires_grad=True)
    maxpool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_maxpool2d_overlapping_windows_accumulate():
    # On a 5x5 input, size 3 stride 2 gives four windows that all contain the centre cell.
    x = Tensor(np.zeros((1, 5, 5, 1)), requires_grad=True)
    x.data[0, 2, 2, 0] = 9.0
    out = maxpool2d(x, 3, 2)
    assert out.shape == (1, 2, 2, 1)
    out.sum().backward()
    expected = np.zeros((5, 5))
    expected[2, 2] = 4.0  # every window's max is the shared centre cell
    np.testing.assert_array_equal(x.grad[0, :, :, 0], expected)


def test_maxpool2d_all_equal_overlapping_routes_to_each_windows_first_cell():
    x = Tensor(np.ones((1, 5, 5, 1)), requires_grad=True)
    maxpool2d(x, 3, 2).sum().backward()
    expected = np.zeros((5, 5))
    expected[0, 0] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1.0
    np.testing.assert_array_equal(x.grad[0, :, :, 0], expected)


@pytest.mark.parametrize("size,stride", [(3, 2), (2, 1), (3, 1), (4, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_overlapping_max_pool_backward_adds_as_the_offset_loop(size, stride, dtype):
    """Scattered by flat index: the loop's sum, offset by offset, bit for bit in float64; in float32, rounded once."""
    from fwbench.backends.engine.pool import MaxWindows
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 9, 8, 3)).astype(dtype)
    pool = MaxWindows(x.shape, size, stride)
    best, arg = np.empty((4, pool.oh, pool.ow, 3), dtype), np.empty((4, pool.oh, pool.ow, 3), pool.index)
    pool.forward(x, best, arg)
    g = rng.standard_normal(best.shape).astype(dtype)
    for n in (3, 2, 4):  # shorter slices first, then one that needs more windows' indices than were kept
        want = np.zeros((n, *x.shape[1:]), np.float64)
        for k, at in enumerate(pool.offsets):
            want[at] += g[:n] * (arg[:n] == k)
        dx = np.full((n, *x.shape[1:]), np.nan, dtype)
        pool.backward(g[:n], arg[:n], dx)
        np.testing.assert_array_equal(dx, want.astype(dtype))


def test_flatten_order_and_gradient():
    x = param(2, 4, 5, 3)  # NHWC: C = 3, H = 4, W = 5
    out = flatten(x)
    assert out.shape == (2, 60)
    assert out.data[1, 2 * 20 + 3 * 5 + 4] == x.data[1, 3, 4, 2]  # the canonical order: C, then H, then W
    strided = Tensor(np.ascontiguousarray(x.data.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(flatten(strided).data, out.data)  # memory order must not leak into the result
    assert_grads(lambda: weighted_sum(flatten(x)), x)


def test_dense_value_and_gradients():
    x, w, b = param(5, 4), param(4, 3), param(3)
    np.testing.assert_allclose(dense(x, w, b).data, x.data @ w.data + b.data)
    assert_grads(lambda: weighted_sum(dense(x, w, b)), x, w, b)


@pytest.mark.parametrize("column_major", [True, False])
def test_a_dense_layer_writes_its_parameters_gradients_into_their_sinks(column_major):
    x, b = param(5, 4), param(3)
    w = Tensor(np.asfortranarray(RNG.standard_normal((4, 3))) if column_major else RNG.standard_normal((4, 3)), True)
    weighted_sum(dense(x, w, b)).backward()
    plain = [w.grad, b.grad]
    for t in (x, w, b):
        t.zero_grad()
    w.sink, b.sink = np.empty_like(w.data), np.empty(3)  # empty_like keeps w's memory order
    weighted_sum(dense(x, w, b)).backward()
    assert w.grad is w.sink and b.grad is b.sink
    np.testing.assert_array_equal(w.grad, plain[0])
    np.testing.assert_array_equal(b.grad, plain[1])
    # Used twice, the second gradient is added to the first as without a sink.
    for t in (x, w, b):
        t.zero_grad()
    (weighted_sum(dense(x, w, b)) + weighted_sum(dense(x, w, b), seed=2)).backward()
    x2, w2, b2 = (Tensor(t.data.copy(), True) for t in (x, w, b))
    (weighted_sum(dense(x2, w2, b2)) + weighted_sum(dense(x2, w2, b2), seed=2)).backward()
    np.testing.assert_allclose(w.grad, w2.grad, rtol=1e-14)
    np.testing.assert_allclose(b.grad, b2.grad, rtol=1e-14)


def test_cross_entropy_value_and_gradient():
    logits, y = param(6, 4), np.array([0, 3, 1, 1, 2, 0])
    p = np.exp(logits.data) / np.exp(logits.data).sum(axis=1, keepdims=True)
    expected = -np.log(p[np.arange(6), y]).mean()
    assert float(cross_entropy(logits, y).data) == pytest.approx(expected, rel=1e-12)
    assert_grads(lambda: cross_entropy(logits, y), logits)


def test_cross_entropy_is_stable_for_large_logits():
    logits = Tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]]), requires_grad=True)
    loss = cross_entropy(logits, np.array([1, 0]))
    loss.backward()
    assert float(loss.data) == pytest.approx(500.0)
    np.testing.assert_allclose(logits.grad, [[0.5, -0.5], [0.0, 0.0]], atol=1e-12)


def test_reused_tensor_accumulates_gradient():
    a = Tensor(np.array([2.0, -3.0]), requires_grad=True)
    (a * a + a).sum().backward()
    np.testing.assert_array_equal(a.grad, [5.0, -5.0])  # d(a^2 + a) = 2a + 1


def test_graph_is_freed_without_the_garbage_collector():
    # A closure that captured its own output would form a cycle, and every step's arrays
    # would linger until the collector ran: slow, and memory-hungry.
    x, w, b = param(2, 6, 6, 1), param(3, 1, 3, 3), param(3)
    gc.disable()
    try:
        h = maxpool2d(relu(conv2d(x, w, b)), 2)
        loss = (h * h + h).sum()
        loss.backward()
        refs = [weakref.ref(loss), weakref.ref(h)]
        del loss, h
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_composite_network_with_reuse():
    x, w, b = param(2, 6, 6, 2), param(3, 2, 3, 3), param(3)
    w2, b2, y = param(12, 4), param(4), np.array([1, 3])

    def build():
        h = relu(conv2d(x, w, b, 1, 1))                # (2, 6, 6, 3)
        h = h * h + h                                  # h feeds three paths
        h = maxpool2d(h, 3, 2)                         # (2, 2, 2, 3)
        return cross_entropy(dense(flatten(h), w2, b2), y)
    assert_grads(build, x, w, b, w2, b2)


def test_float32_stays_float32():
    f32 = np.float32
    x = Tensor(RNG.standard_normal((2, 9, 9, 1)).astype(f32))
    w, b = Tensor(RNG.standard_normal((3, 1, 3, 3)).astype(f32), True), Tensor(np.zeros(3, f32), True)
    w2, b2 = Tensor(RNG.standard_normal((27, 5)).astype(f32), True), Tensor(np.zeros(5, f32), True)
    h = [conv2d(x, w, b, 1, 1)]
    h.append(relu(h[-1]))
    h.append(maxpool2d(h[-1], 3, 3))
    h.append(flatten(h[-1]))
    h.append(dense(h[-1], w2, b2))
    loss = cross_entropy(h[-1], np.array([0, 4]))
    loss.backward()
    for t in [*h, loss, w, b, w2, b2]:
        assert t.data.dtype == f32, t
    for t in [*h, w, b, w2, b2]:
        assert t.grad.dtype == f32, t


@pytest.mark.parametrize("op", ["tanh", "sigmoid"])
def test_squashing_ops_match_finite_differences(op):
    fn = getattr(engine, op)
    x = param(2, 3, 4)
    assert_grads(lambda: weighted_sum(fn(x)), x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_squashing_ops_take_extreme_inputs_without_overflow(dtype):
    x = np.array([-800.0, -100.0, -30.0, -1e-3, 0.0, 2.5, 800.0, np.nan], dtype=dtype)
    with np.errstate(over="raise"):  # exp(800)'s overflow, inside sigmoid(-800), is no error of the caller's
        s, t = engine.sigmoid(Tensor(x)).data, engine.tanh(Tensor(x)).data
    want = 1 / (1 + np.exp(-x[2:-2].astype(np.float64)))
    assert s[0] == 0.0 and s[-2] == 1.0 and s[4] == 0.5 and np.isnan(s[-1])
    # sigmoid(-100) is 3.7e-44, below float32's normal range: there exp(100) overflows, and the result is 0.
    assert s[1] == (pytest.approx(3.7e-44, rel=0.01) if dtype is np.float64 else 0.0)
    np.testing.assert_allclose(s[2:-2], want, rtol=1e-14 if dtype is np.float64 else 1e-6)
    np.testing.assert_array_equal(t, np.tanh(x))


@pytest.mark.parametrize("size,stride,h,w", [*POOL_CASES, (3, 2, 28, 27), (2, 2, 24, 24), (2, 3, 26, 25)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_strided_max_pool_from_its_phases_equals_it_from_the_offsets_bit_for_bit(size, stride, h, w, dtype,
                                                                                   monkeypatch):
    from fwbench.backends.engine import pool
    x = np.random.default_rng(0).standard_normal((40, h, w, 2)).astype(dtype)
    x[x < 0.3] = 0  # ties, as after a relu: the first maximal offset wins either way
    windows = pool.MaxWindows(x.shape, size, stride)
    results = []
    for phase_bytes in (64, 0):
        monkeypatch.setattr(pool, "PHASE_BYTES", phase_bytes)
        monkeypatch.setattr(pool, "PHASE_FROM", 0)
        best = np.empty((len(x), windows.oh, windows.ow, 2), dtype)
        arg = np.empty(best.shape, windows.index)
        windows.forward(x, best, arg)
        results.append((best, arg))
    (best, arg), (want_best, want_arg) = results
    np.testing.assert_array_equal(best, want_best)
    np.testing.assert_array_equal(arg, want_arg)

"""Winograd's stride-1 conv against the direct one (im2col and one GEMM): the same values and gradients, within
1e-12 in float64 and the documented FLOAT32_BOUND in float32, on edge shapes; and where the engine uses it."""
from __future__ import annotations

import numpy as np
import pytest

from fwbench.backends.engine import Tensor, avgpool2d, conv2d, maxpool2d, parallel, relu, tanh, winograd
from fwbench.backends.engine.pool import POOLS, MaxWindows

# Relative L2 error of a float32 Winograd conv's output and each gradient against float64, worst seen in these tests
# 4.6e-6 (F(4x4, 5x5), whose points reach +-2 and +-1/2); the direct path's is about 3e-7. docs/performance.md.
FLOAT32_BOUND = 1e-5

# (N, H, W, C, O, kernel, padding): tiles that cover the output exactly and ones that overhang it, one-pixel
# outputs, a batch of one, asymmetric padding, more outputs than inputs and the reverse.
CASES = [(3, 24, 24, 8, 8, 5, 0), (2, 10, 11, 8, 9, 3, 0), (1, 5, 5, 8, 8, 5, 0), (1, 3, 3, 9, 8, 3, 0),
         (2, 7, 6, 8, 10, 5, (2, 1, 0, 3)), (2, 9, 9, 12, 8, 3, 1), (1, 6, 13, 8, 16, 3, (0, 2, 1, 0)),
         (2, 12, 12, 12, 20, 4, 1), (1, 4, 4, 8, 8, 4, 0), (2, 9, 7, 8, 12, 4, (1, 2, 2, 1)), (2, 14, 14, 8, 12, 3, 1)]


@pytest.fixture
def forced(monkeypatch):
    """Winograd for every conv it can compute (stride 1, a kernel in TILES), whatever its gain, in float64 too."""
    monkeypatch.setattr(winograd, "MIN_GAIN", 0)
    monkeypatch.setattr(winograd, "MIN_DEPTH", 0)
    monkeypatch.setattr(winograd, "DTYPES", (np.float32, np.float64))


def leaves(n, h, w, c, o, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (Tensor(rng.standard_normal((n, h, w, c)).astype(dtype), True),
            Tensor((rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(dtype), True),
            Tensor(rng.standard_normal(o).astype(dtype), True))


def grads_of(build, leaves_):
    """Output and gradients of sum(build() * R) for a fixed random R."""
    for t in leaves_:
        t.zero_grad()
    out = build()
    r = np.random.default_rng(5).standard_normal(out.shape).astype(out.dtype)
    (out * Tensor(r)).sum().backward()
    return [out.data] + [t.grad for t in leaves_]


def direct(case, monkeypatch, **kw):
    """The direct path's output and gradients in float64: the reference."""
    n, h, w, c, o, k, padding = case
    with monkeypatch.context() as m:
        m.setattr(winograd, "MIN_GAIN", float("inf"))
        ls = leaves(n, h, w, c, o, k, np.float64)
        return grads_of(lambda: conv2d(*ls, 1, padding, **kw), ls)


def pads_of(padding):
    return (padding,) * 4 if isinstance(padding, int) else padding


def rel(got, want) -> float:
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


@pytest.mark.parametrize("m,r", sorted({(m, r) for tiles in (winograd.TILES, winograd.WIDE_TILES)
                                        for r, m in tiles.items()}))
def test_the_transforms_compute_a_correlation(m, r):
    at, g, bt = winograd.matrices(m, r)
    rng = np.random.default_rng(0)
    d, w = rng.standard_normal(m + r - 1), rng.standard_normal(r)
    want = np.array([d[i:i + r] @ w for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,bound", [(np.float64, 1e-12), (np.float32, FLOAT32_BOUND)])
def test_winograd_equals_the_direct_conv(case, dtype, bound, forced, monkeypatch):
    n, h, w, c, o, k, padding = case
    want = direct(case, monkeypatch)
    ls = leaves(n, h, w, c, o, k, dtype)
    assert winograd.applies(ls[0].data, ls[1].shape, 1, pads_of(padding))
    got = grads_of(lambda: conv2d(*ls, 1, padding), ls)
    for name, g, wnt in zip(("value", "x grad", "w grad", "b grad"), got, want):
        assert g.dtype == dtype and g.shape == wnt.shape, name
        assert rel(g, wnt) <= bound, (name, rel(g, wnt))


@pytest.mark.parametrize("pool", [None, ("max", 2, 2), ("avg", 3, 1)])
@pytest.mark.parametrize("act", [None, "tanh"])
@pytest.mark.parametrize("relu_after", [False, True])
def test_what_follows_the_conv_is_fused_as_on_the_direct_path(pool, act, relu_after, forced):
    # The epilogue is the direct path's own: fused equals the plain ops bit for bit, Winograd in both.
    ls = leaves(2, 9, 10, 8, 8, 3, np.float64)
    fused = grads_of(lambda: conv2d(*ls, 1, 1, relu=relu_after, pool=pool, act=act), ls)

    def plain():
        y = conv2d(*ls, 1, 1)
        y = tanh(y) if act else y
        y = {"max": maxpool2d, "avg": avgpool2d}[pool[0]](y, *pool[1:]) if pool else y
        return relu(y) if relu_after else y
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), fused, grads_of(plain, ls)):
        np.testing.assert_array_equal(got, want, err_msg=name)


# (N, H, W, C, O, padding, pool size): outputs the tiles cover exactly, square or not, padded or not, a window as
# large as a tile, a batch of one.
POOL_CASES = [(2, 8, 8, 8, 8, 1, 2), (3, 16, 12, 8, 5, 1, 2), (2, 10, 10, 8, 8, 0, 2), (1, 8, 8, 3, 4, 1, 4)]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype,b_bound", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_a_max_pool_the_tiles_cover_is_pooled_by_the_output_transform(case, dtype, b_bound, forced):
    n, h, w, c, o, padding, size = case
    x, wt, b = leaves(n, h, w, c, o, 3, dtype)
    wt.data[:2] = 0  # two channels' outputs are their bias everywhere: every window a tie, won by its first cell
    conv = winograd.Winograd(x.data, wt, b, pads_of(padding))
    assert conv.pools(MaxWindows((n, conv.oh, conv.ow, o), size, size))
    fused = grads_of(lambda: conv2d(x, wt, b, 1, padding, relu=True, pool=("max", size, size)), (x, wt, b))
    plain = grads_of(lambda: relu(maxpool2d(conv2d(x, wt, b, 1, padding), size)), (x, wt, b))
    for name, got, want in zip(("value", "x grad", "w grad"), fused, plain):
        np.testing.assert_array_equal(got, want, err_msg=name)
    # The bias gradient adds the same terms without the pool's zeros between them: in another order.
    assert rel(fused[3], plain[3]) <= b_bound


def test_the_output_transform_pools_only_disjoint_max_windows_inside_its_tiles(forced):
    x, w, b = leaves(2, 8, 9, 8, 8, 3, np.float64)

    def pools(padding, pool, size, stride):
        conv = winograd.Winograd(x.data, w, b, pads_of(padding))
        return conv.pools(POOLS[pool]((2, conv.oh, conv.ow, 8), size, stride))
    exact = (1, 1, 1, 0)  # an 8 x 8 output: 2 x 2 tiles
    assert pools(exact, "max", 2, 2) and pools(exact, "max", 4, 4)
    assert not pools(1, "max", 2, 2)  # 8 x 9: the last tiles overhang
    assert not pools(exact, "avg", 2, 2)
    assert not pools(exact, "max", 3, 2)  # overlapping windows
    assert not pools(exact, "max", 3, 3)  # windows across tiles


def test_slices_and_workers_change_only_the_rounding(forced, monkeypatch):
    case = (5, 12, 12, 8, 8, 5, 1)
    ls = leaves(*case[:6], np.float64)
    whole = grads_of(lambda: conv2d(*ls, 1, 1), ls)
    monkeypatch.setattr(winograd, "SLICE_BYTES", 1)  # a slice per image
    monkeypatch.setattr(parallel, "PARALLEL_FLOPS", 0)
    parallel.configure(2)
    try:
        sliced = grads_of(lambda: conv2d(*ls, 1, 1), ls)
    finally:
        parallel.configure(1)
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), sliced, whole):
        assert rel(got, want) <= 1e-14, name


@pytest.mark.skipif(not parallel.PROCESSES, reason="worker processes need Linux's memfd")
@pytest.mark.parametrize("kw", [{}, {"act": "relu"}, {"pool": ("max", 2, 2), "after": "relu"},
                                {"pool": ("max", 3, 2), "act": "tanh"}, {"pool": ("avg", 2, 2)}])
def test_a_worker_process_gives_the_worker_threads_bits(kw, forced, monkeypatch):
    # The same slices dealt the same way: only where the work runs differs. A 2 x 2 max pool after 4 x 4 tiles is
    # the output transform's own (Winograd.pools).
    ls = leaves(5, 12, 12, 8, 8, 3, np.float32)
    monkeypatch.setattr(winograd, "SLICE_BYTES", 1)
    monkeypatch.setattr(parallel, "PARALLEL_FLOPS", 0)
    monkeypatch.setattr(parallel, "REMOTE_FLOPS", 0)
    results = []
    try:
        for processes in (True, False):
            parallel.configure(1)
            parallel.configure(2, processes=processes)
            assert parallel.processes() == processes
            results.append(grads_of(lambda: conv2d(*ls, 1, 1, **kw), ls))
    finally:
        parallel.configure(1)
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), *results):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_the_float32_bias_gradient_rounds_no_more_than_the_direct_paths(forced, monkeypatch):
    # 8 images of 28 x 28 in one slice: summed down its 6272 rows one after another, the bias gradient read 9.4e-7
    # from float64, where the direct path's (its GEMM's column of ones) reads 3.6e-7 and each image's sum 2.0e-7.
    case = (8, 28, 28, 16, 16, 3, 1)
    want = direct(case, monkeypatch)[3]
    ls = leaves(*case[:6], np.float32)
    assert len(winograd.Winograd(ls[0].data, ls[1], ls[2], (1,) * 4).slices) == 1
    assert rel(grads_of(lambda: conv2d(*ls, 1, 1), ls)[3], want) <= 5e-7
    with monkeypatch.context() as m:
        m.setattr(winograd, "MIN_GAIN", float("inf"))
        ls = leaves(*case[:6], np.float32)
        assert rel(grads_of(lambda: conv2d(*ls, 1, 1), ls)[3], want) <= 5e-7


def test_a_batch_too_large_to_keep_is_transformed_again_for_its_gradients(forced, monkeypatch):
    case = (5, 12, 12, 8, 8, 3, 1)
    ls = leaves(*case[:6], np.float64)
    kept = grads_of(lambda: conv2d(*ls, 1, 1), ls)
    monkeypatch.setattr(winograd, "KEEP_BYTES", 0)
    monkeypatch.setattr(winograd, "SLICE_BYTES", 1)  # and in slices, each its own buffer's
    again = grads_of(lambda: conv2d(*ls, 1, 1), ls)
    for name, got, want in zip(("value", "x grad", "w grad", "b grad"), again, kept):
        assert rel(got, want) <= 1e-14, name


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("channels", [slice(None, None, 2), slice(None, 8)])
def test_an_input_that_is_a_strided_view_gives_its_copys_results(padding, channels, forced):
    # Unpadded, with tiles that cover it exactly, the transform reads the input in place: a view whose pixels are not
    # evenly spaced runs of channels (the first 8 of 16) must not be read as if they were.
    x, w, b = leaves(2, 10, 10, 8, 8, 3, np.float64)
    wide = np.full((2, 10, 10, 16), 7.0)
    wide[..., channels] = x.data
    view = Tensor(wide[..., channels], True)
    assert not view.data.flags.c_contiguous
    got = grads_of(lambda: conv2d(view, w, b, 1, padding), [view, w, b])
    want = grads_of(lambda: conv2d(x, w, b, 1, padding), [x, w, b])
    for name, g, ref in zip(("value", "x grad", "w grad", "b grad"), got, want):
        np.testing.assert_array_equal(g, ref, err_msg=name)


def test_a_weight_without_a_gradient_and_an_input_without_one_are_left_alone(forced):
    x, w, b = leaves(2, 8, 8, 8, 8, 3, np.float64)
    x.requires_grad = w.requires_grad = False
    conv2d(x, w, b, 1, 0).sum().backward()
    assert x.grad is None and w.grad is None and b.grad.shape == (8,)


def test_a_wider_tile_where_it_covers_the_output_with_fewer_values():
    assert winograd.tile(3, 14, 14) == 5  # 9 tiles of 7 x 7 against 16 of 6 x 6: 0.89x the transform work
    assert winograd.tile(3, 9, 9) == 5  # 4 tiles against 9: 0.71x
    assert winograd.tile(3, 24, 24) == 4  # pyex's: 25 against 36, fewer values but 1.10x the work
    assert winograd.tile(3, 28, 28) == 4 and winograd.tile(3, 8, 9) == 4
    assert winograd.tile(3, 1, 1) == 4 and winograd.tile(3, 6, 12) == 4
    assert winograd.tile(5, 14, 14) == 4  # no wider tile for 5 x 5
    # CASES run both: each equals the direct conv within FLOAT32_BOUND (test_winograd_equals_the_direct_conv).
    picked = {winograd.tile(k, h + sum(pads_of(p)[:2]) - k + 1, w + sum(pads_of(p)[2:]) - k + 1)
              for _, h, w, _, _, k, p in CASES if k == 3}
    assert picked == {4, 5}


def test_the_rule_picks_the_large_multi_channel_convs():
    def picked(n_hw, c, o, k, stride=1, padding=0, dtype=np.float32):
        x = np.zeros((2, n_hw, n_hw, c), dtype)
        return winograd.applies(x, (o, c, k, k), stride, pads_of(padding))
    assert picked(24, 32, 32, 5)  # tgmnist's second conv
    assert picked(26, 32, 64, 3)  # pyex's second
    assert not picked(26, 32, 64, 3, stride=2)
    assert not picked(28, 1, 32, 3)  # one input channel: all transform, no GEMM to save
    assert not picked(8, 64, 64, 3)  # a 6x6 output in 4x4 tiles: a gain of 2.25
    assert not picked(14, 6, 16, 5)  # lenet5's second: depth 4.4
    # A gain of 3.06 (14 x 14 in 4 x 4 tiles) pays from depth 10, not below.
    assert picked(14, 32, 64, 3, padding=1)  # flaxex's second: depth 21.3
    assert picked(14, 32, 32, 3, padding=1)  # depth 16
    assert picked(14, 16, 32, 3, padding=1)  # vgg's third: depth 10.7
    assert not picked(14, 8, 32, 3, padding=1)  # depth 6.4
    assert not picked(10, 64, 64, 3, padding=1)  # a gain of 2.78, however deep
    assert picked(24, 12, 20, 4, padding=1)  # the overlap spec's 4 x 4 conv: gain 4.8, depth 7.5
    assert not picked(24, 32, 32, 7)  # no tiles for 7x7
    assert not picked(24, 32, 32, 5, dtype=np.float16)
    assert not picked(24, 32, 32, 5, dtype=np.float64)  # the reference's precision: the direct conv, exact on ties
    x = np.zeros((2, 24, 24, 32), np.float32)
    assert not winograd.applies(x, (32, 32, 3, 5), 1, (0, 0, 0, 0))  # not square

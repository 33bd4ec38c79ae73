"""Row blocks: a few-output-channel conv computed B pixels of a row at a time gives the per-pixel conv's results."""
from __future__ import annotations

import numpy as np
import pytest

from fwbench.backends.engine import conv, conv2d, parallel, rowblocks
from test_engine_fused import grads_of, leaves

# (n, c, h, w, o, k, padding): lenet5's first conv in small, several channels in and out, asymmetric padding, a
# batch of 1, a kernel as wide as the image, a one-pixel-wide output (OW 1: no block), and more outputs than MAX_O
# on a window of WIDE_WINDOW values.
CASES = [(2, 1, 8, 8, 6, 5, 2), (3, 3, 7, 9, 4, 3, 0), (1, 2, 6, 9, 2, 3, (1, 0, 2, 1)), (2, 4, 6, 6, 5, 6, 0),
         (1, 1, 4, 5, 3, 4, 0), (2, 3, 9, 8, 6, 3, 1), (2, 3, 7, 8, 8, 3, 1)]


def by_pixels_and_by_blocks(case, ties, dtype=np.float64, monkeypatch=None, **fused):
    n, c, h, w, o, k, padding = case
    x, wt, b = leaves(n, c, h, w, o, k, ties, dtype=dtype)
    results = []
    for max_o, wide_max_o in ((0, 0), (rowblocks.MAX_O, rowblocks.WIDE_MAX_O)):
        monkeypatch.setattr(rowblocks, "MAX_O", max_o)
        monkeypatch.setattr(rowblocks, "WIDE_MAX_O", wide_max_o)
        results.append(grads_of(lambda: conv2d(x, wt, b, 1, padding, **fused), (x, wt, b), integers=ties))
    return results


def blocks_of(case) -> int:
    n, c, h, w, o, k, padding = case
    left, right = (padding, padding) if isinstance(padding, int) else padding[2:]
    return rowblocks.block_size(o, w + left + right - k + 1, 1, k * k * c)


@pytest.mark.parametrize("case", CASES)
def test_row_blocks_give_the_per_pixel_conv_exactly_on_small_integers(case, monkeypatch):
    pixels, blocks = by_pixels_and_by_blocks(case, True, monkeypatch=monkeypatch)
    for got, want in zip(blocks, pixels):  # the output, then the x, w and b gradients
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_row_blocks_differ_from_the_per_pixel_conv_only_by_rounding(case, dtype, tol, monkeypatch):
    pixels, blocks = by_pixels_and_by_blocks(case, False, dtype, monkeypatch)
    for got, want in zip(blocks, pixels):
        assert got.dtype == dtype
        assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want)


@pytest.mark.parametrize("fused", [dict(act="tanh", pool=("avg", 2, 2)), dict(relu=True, pool=("max", 2, 2))])
def test_row_blocks_keep_the_fused_epilogue(fused, monkeypatch):
    pixels, blocks = by_pixels_and_by_blocks(CASES[0], True, monkeypatch=monkeypatch, **fused)
    for got, want in zip(blocks, pixels):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)  # tanh: not integers


def test_row_blocks_in_slices_of_two_images_give_the_per_pixel_conv(monkeypatch):
    monkeypatch.setattr(conv, "image_slices", lambda n, _, xp=np: parallel.slices(n, 2, xp))
    pixels, blocks = by_pixels_and_by_blocks((3, 2, 6, 8, 4, 3, 1), True, monkeypatch=monkeypatch)  # 2 + 1 images
    for got, want in zip(blocks, pixels):
        np.testing.assert_array_equal(got, want)


def test_row_blocks_cut_again_equal_row_blocks_kept(monkeypatch):
    case = CASES[0]
    kept, again = [], []
    for keep, into in ((1 << 40, kept), (0, again)):
        monkeypatch.setattr(conv, "KEEP_COLS_BYTES", keep)
        into.extend(by_pixels_and_by_blocks(case, False, monkeypatch=monkeypatch)[1])
    for got, want in zip(again, kept):
        np.testing.assert_array_equal(got, want)


def test_the_cases_take_row_blocks_where_they_should():
    assert [blocks_of(case) for case in CASES] == [4, 7, 5, 1, 2, 4, 2]


@pytest.mark.parametrize("o, ow, stride, window, want", [
    (6, 28, 1, 25, 4),    # lenet5's first conv: 24 columns
    (4, 28, 1, 9, 7),     # 24 / 4 = 6 is no divisor of 28; 7 (28 columns) is nearer than 4 (16)
    (6, 13, 1, 9, 1),     # no divisor from 2 to 8
    (8, 28, 1, 25, 1),    # more outputs than MAX_O, on a window shorter than WIDE_WINDOW
    (8, 28, 1, 49, 2),    # wide7's 7 x 7 conv: 16 columns (2) as near as 32 (4)
    (16, 10, 1, 150, 2),  # lenet5's second
    (17, 28, 1, 150, 1),  # more outputs than WIDE_MAX_O
    (6, 28, 2, 25, 1),    # stride 2
    (1, 16, 1, 9, 8),     # B at most 8
])
def test_block_size(o, ow, stride, window, want):
    assert rowblocks.block_size(o, ow, stride, window) == want


def test_widen_then_fold_is_b_times_the_kernel():
    w = np.random.default_rng(0).standard_normal((3, 2, 3, 4))
    for block in (2, 5):
        wide = np.concatenate([rowblocks.widen(w, block), np.tile(np.arange(3.0), block)[None]])
        folded = rowblocks.fold(wide.T, block, 3, 4, 2)  # the widened matrix folded back: B copies summed
        np.testing.assert_array_equal(folded[:, :-1], block * w.transpose(0, 2, 3, 1).reshape(3, -1))
        np.testing.assert_array_equal(folded[:, -1], block * np.arange(3.0))


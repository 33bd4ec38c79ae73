"""Random shifts: seeded, shape-preserving, and really translations."""
import numpy as np

from fwbench.harness.data.augment import random_shift


def images(n=50):
    return np.random.default_rng(0).normal(size=(n, 2, 7, 6)).astype(np.float32)


def test_zero_shift_is_the_identity():
    x = images()
    assert random_shift(x, 0, seed=0, epoch=0) is x


def test_each_image_is_a_translation_within_the_bound():
    x = images()
    out = random_shift(x, 2, seed=3, epoch=1)
    assert out.shape == x.shape and out.dtype == x.dtype
    fill = x.min()
    moved = 0
    for i in range(len(x)):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = np.full_like(x[i], fill)
                src = x[i][:, max(0, dy):x.shape[2] + min(0, dy), max(0, dx):x.shape[3] + min(0, dx)]
                ref[:, max(0, -dy):max(0, -dy) + src.shape[1], max(0, -dx):max(0, -dx) + src.shape[2]] = src
                matches.append((dy, dx) if np.array_equal(out[i], ref) else None)
        found = [m for m in matches if m]
        assert found, f"image {i} is not a translation by at most 2 pixels"
        moved += found[0] != (0, 0)
    assert moved > len(x) // 2  # most images really move


def test_same_seed_and_epoch_same_images_else_different():
    x = images()
    a, b = random_shift(x, 1, 5, 2), random_shift(x, 1, 5, 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, random_shift(x, 1, 5, 3))
    assert not np.array_equal(a, random_shift(x, 1, 6, 2))

"""Adam: torch's update to rounding, its first moment never lingers in float32's subnormal range, and chunked it is
bit for bit the whole update."""
import math

import numpy as np
import pytest

from fwbench.backends.engine import optim
from fwbench.backends.engine.optim import Adam


def torch_adam(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam's arithmetic, written out in p's dtype."""
    f = p.dtype.type
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = m * f(b1) + g * f(1 - b1)
        v = v * f(b2) + (g * g) * f(1 - b2)
        denom = np.sqrt(v) / f(np.sqrt(1 - b2 ** t)) + f(eps)
        p = p - (m / denom) * f(lr / (1 - b1 ** t))
    return p


def plain_adam(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """The engine's arrangement of that update, written out, with no flushing: moments over (1 - b1), (1 - b2)."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = m * np.float32(b1) + g
        v = v * np.float32(b2) + g * g
        root = math.sqrt(1 - b2 ** t) / math.sqrt(1 - b2)
        p = p - (m / (np.sqrt(v) + np.float32(eps * root))) * np.float32(lr * (1 - b1) * root / (1 - b1 ** t))
    return p, m


@pytest.mark.parametrize("dtype, scale, rtol", [(np.float64, 1e-3, 1e-12), (np.float64, 1e-8, 1e-12),
                                                 (np.float32, 1e-3, 3e-5), (np.float32, 1e-8, 3e-5)])
def test_adam_is_torchs_update_up_to_rounding(dtype, scale, rtol):
    # Gradients of 1e-8 put sqrt(vhat) next to eps, where a misplaced or misscaled epsilon would show.
    rng = np.random.default_rng(2)
    p0 = rng.uniform(-0.1, 0.1, 200).astype(dtype)
    # Of one sign mostly, so that every parameter moves a long way: about lr a step.
    grads = [((1 + 0.5 * rng.standard_normal(200)) * scale).astype(dtype) for _ in range(40)]
    p = p0.copy()
    opt = Adam([p], lr=1e-3)
    for g in grads:
        opt.step([g])
    want = torch_adam(p0, grads)
    moved = np.abs(want - p0)
    assert moved.min() > 0.01  # every parameter moved, by far more than the tolerance below
    np.testing.assert_allclose(p - p0, want - p0, rtol=rtol, atol=0)


def test_a_dead_unit_first_moment_is_flushed_without_changing_parameters():
    rng = np.random.default_rng(0)
    p0 = rng.uniform(-0.1, 0.1, 50).astype(np.float32)
    live = rng.standard_normal((900, 50)).astype(np.float32) * 1e-3
    live[1:, :10] = 0  # ten "dead relu" weights: a gradient once, then exactly zero for 899 steps
    p = p0.copy()
    opt = Adam([p], lr=1e-3)
    for g in live:
        opt.step([g])
    want_p, want_m = plain_adam(p0, live)
    tiny = np.finfo(np.float32).tiny
    assert np.any((want_m[:10] != 0) & (np.abs(want_m[:10]) < tiny))  # unflushed, they would be subnormal
    assert np.all(opt.m[0][:10] == 0)  # flushed: at most FLUSH_EVERY steps were spent subnormal
    assert not np.any((opt.m[0] != 0) & (np.abs(opt.m[0]) < tiny))
    assert np.array_equal(opt.m[0][10:], want_m[10:])
    assert np.array_equal(p, want_p)


def test_adam_in_chunks_equals_adam_in_one_pass_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(1)
    shapes, grads = [(3, 5, 7), (11,)], [[rng.standard_normal((3, 5, 7)), rng.standard_normal(11)] for _ in range(40)]
    grads = [[g.astype(np.float32) * 1e-3 for g in step] for step in grads]
    grads[5][0][1] = 0  # exact zeros and, after FLUSH_EVERY steps, a flush inside a chunk
    results = []
    for chunk in (1 << 20, 4):  # one chunk, then chunks smaller than either array, not dividing them
        monkeypatch.setattr(optim, "CHUNK", chunk)
        params = [np.ones(s, np.float32) for s in shapes]
        opt = Adam(params, lr=1e-2)
        for step in grads:
            opt.step(step)
        results.append(params + opt.m + opt.v)
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)

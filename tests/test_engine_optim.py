"""Adam's first moment never lingers in float32's subnormal range, and that changes no parameter."""
import numpy as np

from fwbench.backends.engine.optim import Adam


def plain_adam(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam's arithmetic, written out, with no flushing."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = m * np.float32(b1) + g * np.float32(1 - b1)
        v = v * np.float32(b2) + (g * g) * np.float32(1 - b2)
        denom = np.sqrt(v) / np.float32(np.sqrt(1 - b2 ** t)) + np.float32(eps)
        p = p - (m / denom) * np.float32(lr / (1 - b1 ** t))
    return p, m


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

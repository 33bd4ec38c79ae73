"""Adam: its first moment never lingers in float32's subnormal range, and chunked it is bit for bit the whole update."""
import numpy as np

from fwbench.backends.engine import optim
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

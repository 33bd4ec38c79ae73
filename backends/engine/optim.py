"""SGD with momentum and Adam, updating parameter arrays in place with torch.optim semantics."""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from fwbench.backends.engine import parallel
from fwbench.backends.engine.xp import module_of


class SGD:
    """v = momentum * v + g; p -= lr * v (plain p -= lr * g when momentum is 0)."""

    def __init__(self, params: list[np.ndarray], lr: float, momentum: float = 0.0):
        self.params, self.lr, self.momentum = params, lr, momentum
        # torch starts v at g on the first step; zeros give the same v after one update.
        self.velocity = [module_of(p).zeros_like(p) for p in params] if momentum else None

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update from grads, aligned with params."""
        self.begin()
        self.apply(grads)

    def begin(self) -> None:
        """Count a step (SGD keeps no count)."""

    def apply(self, grads: list[np.ndarray], part: slice = slice(None)) -> None:
        """The step begun last, over elements `part` of every (flattened) parameter: each element's own arithmetic."""
        if self.velocity is None:
            for p, g in zip(self.params, grads):
                segment(p, part)[...] -= self.lr * segment(g, part)
            return
        for p, g, v in zip(self.params, grads, self.velocity):
            p, g, v = (segment(a, part) for a in (p, g, v))
            v *= self.momentum
            v += g
            p -= self.lr * v

    def state(self) -> list[np.ndarray]:
        """The arrays it updates in place besides the parameters."""
        return self.velocity or []

    def place(self, empty) -> None:
        """Its state moved into arrays made by empty(shape, dtype) (shared memory), values kept."""
        self.velocity = self.velocity and moved(self.velocity, empty)


def segment(a: np.ndarray, part: slice) -> np.ndarray:
    """Elements `part` of a, flattened, as a view (a contiguous array's); a itself for every element."""
    return a if part == slice(None) else a.reshape(-1)[part]


def moved(arrays: list[np.ndarray], empty) -> list[np.ndarray]:
    """Copies of arrays in memory made by empty(shape, dtype)."""
    copies = [empty(a.shape, a.dtype) for a in arrays]
    for copy, a in zip(copies, arrays):
        copy[...] = a
    return copies


FLUSH_EVERY = 16
# Adam runs its ten passes over this many elements at a time, so that they stay in cache between the passes
# (pyex's 1.2 M parameters, whole arrays against 32K chunks: 12.5 -> 4 ms a step here). Its five arrays' chunks are
# 2.5 MiB in float32, in L3, and each pass is one NumPy call of about 10 us: on two workers, calls of a few us wait on
# each other for the GIL, and 32K chunks (in L2) took 1.07-1.2x as long (pyex 2.64 against 2.36 ms, flaxex 1.71
# against 1.43-1.56).
CHUNK = 1 << 17
# An array's chunks are shared between the workers from this many elements; a smaller one's passes are too short (the
# calls then wait on each other for the GIL). Adam's step alone, 30 alternating rounds in one process: pyex's 1.18 M
# weights on two workers took 0.69x the time of one (2.19 -> 1.55 ms), dmlp's 401K and 262K 1.04x. Since Adam runs
# over the one flat array of every parameter, measured again on the Intel host (2026-12-04): from 256K rather than
# 1M, flaxex's 824K took 1.21 ms against 1.33, and its step 0.943x and 0.959x (two runs of 8 alternating rounds in
# fresh processes); dmlp's 670K 0.98x and 0.99x.
SHARE_FROM = 1 << 18


def chunks(n: int, xp=np) -> list[slice]:
    """Consecutive slices of n elements, CHUNK each (one slice off the CPU)."""
    return parallel.slices(n, CHUNK, xp)


class Adam:
    """Adam with bias correction: torch.optim.Adam's update, with its moments kept rescaled so a step is ten passes."""

    def __init__(self, params: list[np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        # Updated in place through flat views, which only a contiguous array has.
        assert all(p.flags.c_contiguous for p in params), "Adam updates contiguous parameter arrays only"
        xp = module_of(*params)
        # m / (1 - b1) and v / (1 - b2): then m's update is m * b1 + g and v's is v * b2 + g * g, and both factors
        # go into two scalars of the step. Ten NumPy passes an element instead of thirteen (dmlp's 669K parameters:
        # 1.06-1.13 against 1.30-1.42 ms); it rounds differently from torch, by a few float32 ulps of a step.
        self.m = [xp.zeros_like(p) for p in params]
        self.v = [xp.zeros_like(p) for p in params]
        self.tiny = [np.finfo(p.dtype).tiny for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update: p -= lr * mhat / (sqrt(vhat) + eps)."""
        self.begin()
        self.apply(grads)

    def begin(self) -> None:
        """Count a step: apply() then updates with its bias corrections."""
        self.t += 1

    def state(self) -> list[np.ndarray]:
        """The arrays it updates in place besides the parameters."""
        return [*self.m, *self.v]

    def place(self, empty) -> None:
        """Its state moved into arrays made by empty(shape, dtype) (shared memory), values kept."""
        self.m, self.v = moved(self.m, empty), moved(self.v, empty)

    def apply(self, grads: list[np.ndarray], part: slice = slice(None)) -> None:
        """The step begun last, over elements `part` of every (flattened) parameter: each element's own arithmetic."""
        b1, b2 = self.betas
        # With mhat = (1 - b1) m / bc1 and sqrt(vhat) = sqrt(1 - b2) sqrt(v) / sqrt(bc2), multiplying the fraction
        # through by sqrt(bc2) / sqrt(1 - b2) leaves step * m / (sqrt(v) + eps_v): one scale, one epsilon.
        root = math.sqrt(1 - b2 ** self.t) / math.sqrt(1 - b2)
        step_size, eps_v = self.lr * (1 - b1) * root / (1 - b1 ** self.t), self.eps * root
        xp = module_of(*self.params)
        for p, g, m, v, tiny in zip(self.params, grads, self.m, self.v, self.tiny):
            p, g, m, v = (a.reshape(-1)[part] for a in (p, g, m, v))  # views: every array is contiguous
            if p.size == 0:
                continue

            work = partial(self._chunks, p, g, m, v, tiny, step_size, eps_v)
            # The rule is SHARE_FROM's, measured on Adam itself, not share()'s count of FLOPs. In the worker processes
            # where every array lies in their shared memory (numpy_split.share_update): there, no GIL.
            parallel.share(work, chunks(p.size, xp), parallel.PARALLEL_FLOPS if p.size >= SHARE_FROM else 0,
                           remote=xp is np and all(parallel.placed(a) for a in (p, g, m, v)))

    def _chunks(self, p, g, m, v, tiny, step_size: float, eps_v: float, _: int, cs: list[slice]) -> None:
        """A worker's chunks of the update."""
        xp = module_of(p)
        # Scratch of one chunk per worker, so the passes allocate nothing more.
        size = cs[0].stop - cs[0].start
        tmp, normal = xp.empty(size, p.dtype), xp.empty(size, bool)
        for c in cs:
            n = c.stop - c.start
            self._update(p[c], g[c], m[c], v[c], tmp[:n], normal[:n], tiny, step_size, eps_v)

    def _update(self, p, g, m, v, tmp, normal, tiny, step_size: float, eps_v: float) -> None:
        """One chunk's update, in place through one scratch array."""
        b1, b2 = self.betas
        xp = module_of(p)
        m *= b1
        m += g
        # Where the gradient stays exactly 0 (a dead relu unit), m shrinks by b1 a step and reaches float32's
        # subnormals after ~700 steps; every operation on them then takes a slow microcode path (mlp step
        # 0.72 -> 1.05 ms). Flushing them to 0 changes no parameter: their update, under tiny / eps * lr,
        # is far below the rounding of any parameter. XLA flushes subnormals on the CPU the same way.
        # Every FLUSH_EVERY steps is enough: an element then spends at most that many steps subnormal.
        if self.t % FLUSH_EVERY == 0:
            xp.absolute(m, out=tmp)
            m *= xp.greater_equal(tmp, tiny, out=normal)
        v *= b2
        v += xp.multiply(g, g, out=tmp)
        xp.sqrt(v, out=tmp)
        tmp += eps_v
        xp.divide(m, tmp, out=tmp)
        p -= xp.multiply(tmp, step_size, out=tmp)       # p -= step_size * m / (sqrt(v) + eps_v)

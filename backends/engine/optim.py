"""SGD with momentum and Adam, updating parameter arrays in place with torch.optim semantics."""
from __future__ import annotations

import math

import numpy as np

from fwbench.backends.engine.xp import module_of


class SGD:
    """v = momentum * v + g; p -= lr * v (plain p -= lr * g when momentum is 0)."""

    def __init__(self, params: list[np.ndarray], lr: float, momentum: float = 0.0):
        self.params, self.lr, self.momentum = params, lr, momentum
        # torch starts v at g on the first step; zeros give the same v after one update.
        self.velocity = [module_of(p).zeros_like(p) for p in params] if momentum else None

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update from grads, aligned with params."""
        if self.velocity is None:
            for p, g in zip(self.params, grads):
                p -= self.lr * g
            return
        for p, g, v in zip(self.params, grads, self.velocity):
            v *= self.momentum
            v += g
            p -= self.lr * v


FLUSH_EVERY = 16


class Adam:
    """Adam with bias correction, arranged as torch.optim.Adam computes it."""

    def __init__(self, params: list[np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        xp = module_of(*params)
        self.m = [xp.zeros_like(p) for p in params]
        self.v = [xp.zeros_like(p) for p in params]
        self.tmp = [xp.empty_like(p) for p in params]  # scratch, so a step allocates nothing
        self.denom = [xp.empty_like(p) for p in params]
        self.normal = [xp.empty(p.shape, bool) for p in params]
        self.tiny = [np.finfo(p.dtype).tiny for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update: p -= lr * mhat / (sqrt(vhat) + eps)."""
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        sqrt_bc2 = math.sqrt(1 - b2 ** self.t)
        xp = module_of(*self.params)
        for p, g, m, v, tmp, denom, normal, tiny in zip(self.params, grads, self.m, self.v, self.tmp, self.denom,
                                                        self.normal, self.tiny):
            # In place through two scratch arrays per parameter; each line rounds as the plain expression would.
            m *= b1
            m += xp.multiply(g, 1 - b1, out=tmp)            # m += (1 - b1) * g
            # Where the gradient stays exactly 0 (a dead relu unit), m shrinks by b1 a step and reaches float32's
            # subnormals after ~700 steps; every operation on them then takes a slow microcode path (mlp step
            # 0.72 -> 1.05 ms). Flushing them to 0 changes no parameter: their update, under tiny / eps * lr,
            # is far below the rounding of any parameter. XLA flushes subnormals on the CPU the same way.
            # Every FLUSH_EVERY steps is enough: an element then spends at most that many steps subnormal.
            if self.t % FLUSH_EVERY == 0:
                xp.absolute(m, out=tmp)
                m *= xp.greater_equal(tmp, tiny, out=normal)
            v *= b2
            xp.multiply(g, g, out=tmp)
            v += xp.multiply(tmp, 1 - b2, out=tmp)          # v += (1 - b2) * (g * g)
            # Same grouping as torch: sqrt(v)/sqrt(bc2) + eps, then a step of lr/bc1.
            xp.sqrt(v, out=denom)
            denom /= sqrt_bc2
            denom += self.eps
            xp.divide(m, denom, out=denom)
            p -= xp.multiply(denom, step_size, out=denom)   # p -= step_size * (m / denom)

"""SGD (momentum) and Adam as pure functions on parameter dicts, following torch.optim's rules."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


class Optimizer(NamedTuple):
    """init(params) -> state; update(params, grads, state, lr) -> (params, state). Both jit-safe."""
    init: Callable[[dict], Any]
    update: Callable[[dict, dict, Any, Any], tuple[dict, Any]]


def sgd(momentum: float = 0.0) -> Optimizer:
    """v = momentum * v + g; p -= lr * v, or plain p -= lr * g when momentum is 0."""
    if not momentum:
        # torch keeps no buffer at momentum 0, and neither do we: the update is exactly p - lr * g.
        return Optimizer(lambda params: (),
                         lambda params, grads, state, lr: (tree_map(lambda p, g: p - lr * g, params, grads), state))

    def update(params, grads, velocity, lr):
        velocity = tree_map(lambda v, g: momentum * v + g, velocity, grads)
        return tree_map(lambda p, v: p - lr * v, params, velocity), velocity

    # torch starts the buffer at g on the first step; a zero buffer gives that same first v.
    return Optimizer(lambda params: tree_map(jnp.zeros_like, params), update)


def adam(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    """Bias-corrected Adam, p -= lr * mhat / (sqrt(vhat) + eps), grouped as torch.optim.Adam computes it."""
    b1, b2 = betas

    def init(params):
        # Two separate zero trees: the step donates its state, and one buffer cannot be donated twice.
        return {"t": jnp.zeros((), jnp.int32), "m": tree_map(jnp.zeros_like, params),
                "v": tree_map(jnp.zeros_like, params)}

    def update(params, grads, state, lr):
        t = state["t"] + 1
        tf = t.astype(lr.dtype)  # the corrections in the parameter dtype, never a silent float64
        step_size = lr / (1 - b1 ** tf)
        sqrt_bc2 = jnp.sqrt(1 - b2 ** tf)
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g), state["v"], grads)
        # torch: denom = sqrt(v) / sqrt(bc2) + eps (eps outside the root), then a step of lr / bc1.
        params = tree_map(lambda p, m, v: p - step_size * (m / (jnp.sqrt(v) / sqrt_bc2 + eps)), params, m, v)
        return params, {"t": t, "m": m, "v": v}

    return Optimizer(init, update)

"""Analytic gradients against central finite differences, on a few sampled coordinates of every parameter."""
from __future__ import annotations

import numpy as np

from fwbench import backends
from fwbench.backends.base import Backend
from fwbench.models.params import Params, dropout_masks
from fwbench.models.spec import ModelSpec


def fd_check(spec: ModelSpec, params: Params, x: np.ndarray, y: np.ndarray, samples: int = 4,
             eps: float = 1e-6, seed: int = 0, backend: str = "numpy", device: str = "cpu") -> dict[str, dict]:
    """Per parameter: sampled coords, analytic and numeric gradients there, and the worst relative error."""
    # The NumPy engine by default; any backend ("NAME@MODE") that runs float64 can be checked the same way.
    model = backends.build(backend, spec, params, device=device, dtype="float64")
    masks = dropout_masks(spec, seed, 0, len(y))
    if masks:
        model.set_masks(masks)  # the same units dropped in every evaluation of the loss
    # A training pass differs from forward() where batch norm or dropout is: then the loss is the training one.
    training = bool(masks or spec.buffer_shapes())
    _, analytic = model.loss_and_grads(x, y)
    base = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    result = {}
    for key, value in base.items():
        flat = rng.choice(value.size, size=min(samples, value.size), replace=False)
        coords = [tuple(int(i) for i in np.unravel_index(f, value.shape)) for f in flat]
        a = [float(analytic[key][c]) for c in coords]
        n = [_central(model, base, key, c, x, y, eps, training) for c in coords]
        result[key] = {"coords": coords, "analytic": a, "numeric": n,
                       "worst_rel": max(_rel(ai, ni) for ai, ni in zip(a, n))}
    return result


def worst(result: dict[str, dict]) -> tuple[str, float]:
    """The parameter with the largest relative error, and that error."""
    key = max(result, key=lambda k: result[k]["worst_rel"])
    return key, result[key]["worst_rel"]


def _central(backend: Backend, base: Params, key: str, coord: tuple[int, ...],
             x: np.ndarray, y: np.ndarray, eps: float, training: bool = False) -> float:
    """(loss(p + eps) - loss(p - eps)) / 2eps along one coordinate; base is restored afterwards."""
    old = base[key][coord]
    losses = []
    for shifted in (old + eps, old - eps):
        base[key][coord] = shifted
        backend.set_params(base)
        # Forward only where it computes the training loss: half the cost, and a loss written apart from the backend's.
        losses.append(backend.loss_and_grads(x, y)[0] if training else cross_entropy(backend.forward(x), y))
    base[key][coord] = old
    return (losses[0] - losses[1]) / (2 * eps)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of (N, K) logits against integer labels, by log-sum-exp."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


# In float64 with eps=1e-6 the numeric side carries ~1e-10 of rounding noise; dividing by at least
# 1e-4 keeps that noise near 1e-6 for tiny gradients too, where a plain relative error would blow up.
FLOOR = 1e-4


def _rel(a: float, n: float) -> float:
    """|a - n| relative to the larger of the two, or to FLOOR for gradients smaller than that."""
    # Symmetric: neither side is trusted as the reference. Dead units (analytic and numeric both 0) read 0.
    return abs(a - n) / max(abs(a), abs(n), FLOOR)

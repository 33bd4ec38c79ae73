"""How far two arrays are apart: the four measures fwbench reports for every tensor."""
from __future__ import annotations

import numpy as np

METRICS = ("max_abs", "rel_l2", "rho", "cosine")
# One line each, for tables and docs.
DESCRIPTIONS = {
    "max_abs": "max |a-b|",
    "rel_l2": "relative L2 ||a-b|| / ||b||",
    "rho": "ADBench/GradBench error max|a-b| / max(1, |a|+|b|)",
    "cosine": "cosine similarity a.b / (||a|| ||b||)",
}


# A gradient that is zero in exact arithmetic (the bias of a conv or dense layer that feeds a batch norm, directly or
# through linear layers) comes out as rounding noise in every backend, so its relative error means nothing. The float64
# reference tells such gradients apart: their norm is at most EXACT_ZERO times the largest gradient's. Measured
# (docs/agreement.md): at most 5.2e-15 for zeros, at least 3.4e-3 for real gradients; EXACT_ZERO sits far from both.
EXACT_ZERO = 1e-9
# An exact zero is measured against ZERO_FLOOR[dtype] times the largest gradient's L2 norm instead of its own norm.
# The noise measured (FRESH and tgmnist-like specs, batches 8-32, seeds 0-2, the NumPy engine and torch):
# float64 up to 8.6e-15 and float32 up to 9.4e-7 of the largest norm, so read against these floors 8.6e-13 and
# 9.4e-7: 100 and 10 times under the one-step bounds. Real gradients never use the floor: 1% off always reads 1e-2.
ZERO_FLOOR = {"float64": 1e-2, "float32": 1.0}


def _norm(a) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64)))


def gradient_floor(grads: dict, dtype: str) -> float:
    """The absolute L2 floor for one set of gradients: ZERO_FLOOR[dtype] times the largest tensor's norm."""
    return ZERO_FLOOR[dtype] * max((_norm(g) for g in grads.values()), default=0.0)


def exact_zeros(grads: dict) -> list[str]:
    """The names of float64 reference gradients that are zero in exact arithmetic, in order."""
    big = max((_norm(g) for g in grads.values()), default=0.0)
    return [k for k, g in grads.items() if _norm(g) <= EXACT_ZERO * big] if big > 0 else []


def floors(grads: dict, dtype: str) -> dict[str, float]:
    """Per tensor of the float64 reference, the floor to compare it with: gradient_floor for exact zeros, else 0."""
    zeros, floor = set(exact_zeros(grads)), gradient_floor(grads, dtype)
    return {k: floor if k in zeros else 0.0 for k in grads}


def compare(a, b, floor: float = 0.0) -> dict[str, float]:
    """All four measures of a against the reference b, computed in float64; rel_l2 divides by at least floor."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    diff = a - b
    norm_a, norm_b, norm_d = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(diff)
    # Two exact zeros agree perfectly; a zero reference with a non-zero candidate is infinitely off.
    scale = max(norm_b, floor)
    rel = 0.0 if norm_d == 0 else (norm_d / scale if scale > 0 else float("inf"))
    cos = 1.0 if norm_d == 0 else (float(a @ b) / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0)
    return {
        "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_l2": float(rel),
        "rho": float(np.max(np.abs(diff) / np.maximum(1.0, np.abs(a) + np.abs(b)))) if diff.size else 0.0,
        "cosine": float(cos),
    }


def tree_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Relative L2 distance between two parameter sets taken as one vector: ||a-b|| / ||b||."""
    num = sum(float(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2)) for k in b)
    den = sum(float(np.sum(np.asarray(b[k], np.float64) ** 2)) for k in b)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))

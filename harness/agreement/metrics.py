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


def compare(a, b) -> dict[str, float]:
    """All four measures of a against the reference b, computed in float64."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    diff = a - b
    norm_a, norm_b, norm_d = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(diff)
    # Two exact zeros agree perfectly; a zero reference with a non-zero candidate is infinitely off.
    rel = 0.0 if norm_d == 0 else (norm_d / norm_b if norm_b > 0 else float("inf"))
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

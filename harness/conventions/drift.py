"""How far a framework's native defaults drift from fwbench's canonical semantics over a run."""
from __future__ import annotations

import numpy as np

from fwbench.harness.conventions import canonical

STEPS = 100
BATCH, SIDE, KERNEL, CHANNELS = 8, 8, 3, 3
VALUES_PER_CHANNEL = BATCH * (SIDE - KERNEL + 1) ** 2  # what each channel's batch statistics average over
LR = 1e-2


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def batchnorm_drift(ops, seed: int = 0) -> list[dict]:
    """Per native setting in ops.BN_SETTINGS, the running statistics' distance from the canonical ones.

    A VALID conv with fixed seeded weights, then batch norm, runs STEPS training-mode passes over seeded random
    batches, no weight updated; the canonical statistics come from the same passes in float64."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.5, (CHANNELS, 1, KERNEL, KERNEL))
    bias = rng.normal(0, 1, CHANNELS)
    # Mean 1 and standard deviation 2: statistics far from the starting (0, 1), so a slow update shows.
    batches = [rng.normal(1, 2, (BATCH, 1, SIDE, SIDE)) for _ in range(STEPS)]
    mean, var = canonical.running_stats(weight, bias, batches)
    rows = []
    for setting, momentum in ops.BN_SETTINGS.items():
        got = ops.running_stats(weight.astype(np.float32), bias.astype(np.float32),
                                [x.astype(np.float32) for x in batches], momentum)
        rows.append({"setting": setting, "running_mean": relative(got[0], mean), "running_var": relative(got[1], var)})
    return rows


def adam_drift(ops, seed: int = 0) -> dict:
    """The parameters' distance from the canonical Adam's after STEPS native steps at LR on a fixed quadratic."""
    rng = np.random.default_rng(seed)
    p0 = rng.normal(size=32)
    # Curvatures from 1e-9 to 1e2: the smallest make gradients of eps's size, where eps's placement shows.
    curvature = np.logspace(-9, 2, 32)
    want = canonical.adam_quadratic(p0, curvature, LR, STEPS)
    return {"setting": ops.ADAM, "parameters": relative(ops.adam_quadratic(p0, curvature, LR, STEPS), want)}

"""Per-step wall-clock timing for the plain loops: the first step apart, warm-up, then median and IQR."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def time_steps(step: Callable[[int], object], steps: int, warmup: int) -> dict:
    """Time step(0) alone (compilation), run `warmup` untimed steps, then time `steps` steps one by one.

    step(i) must run training step i to completion, synchronizing the device before it returns.
    """
    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    for i in range(1, 1 + warmup):
        step(i)
    ms = np.empty(steps)
    for k, i in enumerate(range(1 + warmup, 1 + warmup + steps)):
        start = time.perf_counter()
        step(i)
        ms[k] = (time.perf_counter() - start) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {"first_step_s": first, "step_ms": float(median), "step_ms_iqr": float(q3 - q1), "steps": steps}

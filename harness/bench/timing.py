"""Step timing that measures only the step: data is prepared first, each step ends in synchronize()."""
from __future__ import annotations

import time

import numpy as np

from backends.base import Backend


def time_steps(backend: Backend, batches: list, lrs: list[float], warmup: int, steps: int) -> dict:
    """First step (compilation included) apart, then the median and IQR of `steps` timed steps after `warmup`."""
    def one(i: int) -> float:
        start = time.perf_counter()
        backend.set_lr(lrs[i % len(lrs)])
        backend.train_step(batches[i % len(batches)])
        backend.synchronize()
        return time.perf_counter() - start

    first = one(0)
    for i in range(1, 1 + warmup):
        one(i)
    times = np.array([one(i) for i in range(1 + warmup, 1 + warmup + steps)]) * 1e3
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"first_step_s": first, "step_ms": float(median), "step_ms_iqr": float(q3 - q1), "steps": steps}

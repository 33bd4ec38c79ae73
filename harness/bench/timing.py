"""Step timing that measures only the steps: data is prepared first, each timed call ends in synchronize()."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from backends.base import Backend

# A fused backend is timed over whole calls of `steps` steps, this many times, after a compiling call.
FUSED_CALLS = 5


def time_steps(backend: Backend, epoch: Any, lrs: list[float], warmup: int, steps: int) -> dict:
    """The first call (compilation included) apart, then the median, IQR and every timed call, per step."""
    # `epoch` is a prepare_epoch result of at least 1 + warmup + steps batches. A fused backend runs all
    # `steps` in each call and needs no warm-up: its first call compiled everything the others run.
    def one(start: int, n: int) -> float:
        begin = time.perf_counter()
        backend.train_steps(epoch, start, start + n, [lrs[(start + k) % len(lrs)] for k in range(n)])
        backend.synchronize()
        return time.perf_counter() - begin

    if backend.fused:
        first = one(0, steps)
        times = np.array([one(0, steps) for _ in range(FUSED_CALLS)]) / steps * 1e3
    else:
        first = one(0, 1)
        for i in range(1, 1 + warmup):
            one(i, 1)
        times = np.array([one(i, 1) for i in range(1 + warmup, 1 + warmup + steps)]) * 1e3
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    per_call = steps if backend.fused else 1
    # Compilation is what the first call took beyond an ordinary call of the same length.
    return {"first_step_s": first, "compile_s": max(0.0, first - median * per_call / 1e3), "step_ms": float(median),
            "step_ms_iqr": float(q3 - q1), "steps": steps, "steps_per_call": per_call,
            "samples": [round(float(t), 5) for t in times]}

"""Step timing that measures only the steps: data is prepared first, each timed call ends in synchronize()."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from fwbench.backends.base import Backend

# A fused backend is timed over whole calls of `steps` steps, at least this many times, after a compiling call.
FUSED_CALLS = 5
# Floors on the warm-up and on the timed work, in seconds: a run of 20 mlp steps lasts 15 ms, too short to
# stand for the process (step times on the shared 2-core machine move by tens of percent over seconds).
MIN_WARMUP_S = 0.2
MIN_TIMED_S = 0.5


def time_steps(backend: Backend, epoch: Any, lrs: list[float], warmup: int, steps: int,
               min_warmup_s: float = MIN_WARMUP_S, min_timed_s: float = MIN_TIMED_S) -> dict:
    """The first call (compilation included) apart, then the median, IQR and every timed call, per step."""
    # `epoch` is a prepare_epoch result of at least 1 + warmup + steps batches, reused in turn past its end.
    # A fused backend runs all `steps` in each call and needs no warm-up: its first call compiled them.
    count = 1 + warmup + steps

    def one(start: int, n: int) -> float:
        start %= count
        begin = time.perf_counter()
        backend.train_steps(epoch, start, start + n, [lrs[(start + k) % len(lrs)] for k in range(n)])
        backend.synchronize()
        return time.perf_counter() - begin

    if backend.fused:
        first, calls = time_calls(lambda i: one(0, steps), 0, FUSED_CALLS, min_timed_s=min_timed_s)
        times = np.array(calls) / steps * 1e3
    else:
        first, calls = time_calls(lambda i: one(i, 1), warmup, steps, min_warmup_s, min_timed_s)
        times = np.array(calls) * 1e3
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    per_call = steps if backend.fused else 1
    # Compilation is what the first call took beyond an ordinary call of the same length.
    return {"first_step_s": first, "compile_s": max(0.0, first - median * per_call / 1e3), "step_ms": float(median),
            "step_ms_iqr": float(q3 - q1), "steps": len(times) * per_call, "steps_per_call": per_call,
            "samples": [round(float(t), 5) for t in times]}


def time_step_fn(step: Callable[[int], object], steps: int, warmup: int) -> dict:
    """A hand-written loop's step(i), which synchronizes before it returns: the first step apart, median and IQR."""
    def one(i: int) -> float:
        begin = time.perf_counter()
        step(i)
        return time.perf_counter() - begin

    first, calls = time_calls(one, warmup, steps)
    q1, median, q3 = np.percentile(np.array(calls) * 1e3, [25, 50, 75])
    return {"first_step_s": first, "step_ms": float(median), "step_ms_iqr": float(q3 - q1), "steps": steps}


def time_calls(one: Callable[[int], float], warmup: int, calls: int, min_warmup_s: float = 0.0,
               min_timed_s: float = 0.0) -> tuple[float, list[float]]:
    """(one(0), the timed calls' seconds): one(i) runs call i and returns its own time; warm-up calls are untimed."""
    # one(i) reads the clock itself, so that the timed region holds the call's work and nothing of this loop.
    first = one(0)
    i, begin = 1, time.perf_counter()
    while i <= warmup or time.perf_counter() - begin < min_warmup_s:
        one(i)
        i += 1
    timed: list[float] = []
    while len(timed) < calls or sum(timed) < min_timed_s:
        timed.append(one(i))
        i += 1
    return first, timed

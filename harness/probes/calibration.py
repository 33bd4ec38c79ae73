"""A short fixed calibration of the machine: float32 matmul GFLOP/s and memory bandwidth, with NumPy."""
from __future__ import annotations

import time

import numpy as np

MATMUL_N = 512        # 512x512 float32: cache-friendly, BLAS-bound, ~1 ms on one modern core
COPY_MB = 64          # well beyond the last-level cache, so the copy measures DRAM bandwidth
REPEATS = 15


def _fastest(fn, repeats: int) -> float:
    """The fastest of `repeats` timings: what the machine can do, since anything else on it only adds time."""
    fn()  # first touch and BLAS thread start-up stay out of the figures
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return float(np.min(times))


def calibrate(repeats: int = REPEATS) -> dict:
    """Matmul GFLOP/s and copy bandwidth GB/s, each from the fastest of its timings; about a second in all."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    t_mm = _fastest(lambda: np.matmul(a, b, out=out), repeats * 4)
    src = np.ones(COPY_MB * 2**20 // 8)
    dst = np.empty_like(src)
    t_copy = _fastest(lambda: np.copyto(dst, src), repeats)
    return {"matmul_gflops": round(2 * MATMUL_N**3 / t_mm / 1e9, 2),
            "bandwidth_gbs": round(2 * src.nbytes / t_copy / 1e9, 2),  # read + write
            "matmul_n": MATMUL_N, "copy_mb": COPY_MB, "repeats": repeats, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

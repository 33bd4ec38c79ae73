"""NumPy's BLAS against torch's on the engine's GEMM shapes: how much of a spec's gap is the host's GEMM libraries.

Usage: python benchmarks/blas_vs_torch.py [--shapes M,K,N;M,K,N...] [--threads 1,2] [--calls 40] [--rounds 3]
Each shape (M x K by K x N, float32, row-major) runs under NumPy (its BLAS held at the thread count by threadpoolctl)
and under torch (torch.set_num_threads), in alternating rounds; a row gives the medians, the GFLOP/s and torch's
time over NumPy's. The default shapes are GEMMs the engine runs on a slice or a batch: vgg's 16 -> 32 conv forward
(12544 x 145 by 145 x 32) and weight gradient, strided's 32 -> 64 conv forward and its input gradient's per-offset
product, dense layers of 64 images, and a large square for reference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

SHAPES = "12544,145,32;32,12544,145;3136,289,64;784,64,32;64,784,512;784,64,512;1024,1024,1024"


def median_ms(fn, calls: int) -> float:
    """The median of `calls` timed calls of fn, after one untimed call, in milliseconds."""
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(shape: tuple[int, int, int], threads: int, calls: int, rounds: int) -> dict:
    """NumPy's and torch's median ms for one shape at one thread count, rounds alternating which runs first."""
    import torch
    from threadpoolctl import threadpool_limits

    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out.copy())
    runs: dict[str, list[float]] = {"numpy": [], "torch": []}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads, user_api="blas"):
            for r in range(rounds):
                for lib in (("numpy", "torch") if r % 2 == 0 else ("torch", "numpy")):
                    fn = (lambda: np.matmul(a, b, out=out)) if lib == "numpy" else (lambda: torch.mm(ta, tb, out=tout))
                    runs[lib].append(median_ms(fn, calls))
    finally:
        torch.set_num_threads(before)
    np_ms, torch_ms = statistics.median(runs["numpy"]), statistics.median(runs["torch"])
    gflop = 2 * m * k * n / 1e9
    return {"shape": shape, "threads": threads, "numpy_ms": np_ms, "torch_ms": torch_ms,
            "numpy_gflops": gflop / np_ms * 1e3, "torch_gflops": gflop / torch_ms * 1e3, "ratio": np_ms / torch_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="M,K,N triples separated by ';'")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";") if s]
    print("| M x K by K x N | threads | numpy ms | torch ms | numpy GFLOP/s | torch GFLOP/s | numpy / torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for shape in shapes:
        for threads in (int(t) for t in a.threads.split(",")):
            row = measure(shape, threads, a.calls, a.rounds)
            print(f"| {' x '.join(map(str, shape))} | {threads} | {row['numpy_ms']:.3f} | {row['torch_ms']:.3f} | "
                  f"{row['numpy_gflops']:.0f} | {row['torch_gflops']:.0f} | {row['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""The engine's Winograd conv against its direct path, forward and backward, on the convs docs/performance.md lists.

Usage: python benchmarks/winograd.py [NAME ...] [--rounds 12]
Each conv (batch 64, float32, relu fused, two workers) is timed in alternating rounds, Winograd forced on and off,
so both see the same state of the machine; the first two rounds are warm-up. Prints the medians and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fwbench.backends.engine import Tensor, conv2d, parallel, winograd
from fwbench.harness import allocator

# name -> (N, H, W, C, O, kernel, padding)
CONVS = {
    "tgmnist-2": (64, 24, 24, 32, 32, 5, 0), "pyex-2": (64, 26, 26, 32, 64, 3, 0),
    "tgmnist-3": (64, 10, 10, 32, 64, 3, 0), "tgmnist-4": (64, 8, 8, 64, 64, 3, 0),
    "flaxex-2": (64, 14, 14, 32, 64, 3, 1), "lenet5-2": (64, 14, 14, 6, 16, 5, 0),
    "64to64": (64, 28, 28, 64, 64, 3, 1), "8to16-5x5": (64, 24, 24, 8, 16, 5, 0),
    "16to16": (64, 28, 28, 16, 16, 3, 1), "8to8": (64, 28, 28, 8, 8, 3, 1),
    "overlap-2": (64, 24, 24, 12, 20, 4, 1),
}


def step(leaves: list[Tensor], padding: int, g: np.ndarray, use: bool) -> tuple[float, float]:
    """Forward and backward seconds of one conv, by Winograd or not."""
    winograd.MIN_GAIN, winograd.MIN_DEPTH = (0, 0) if use else (float("inf"), 0)
    for t in leaves:
        t.zero_grad()
    start = time.perf_counter()
    y = conv2d(*leaves, 1, padding, relu=True)
    mid = time.perf_counter()
    y._backward(g)
    return mid - start, time.perf_counter() - mid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"convs to time (default: all of {', '.join(CONVS)})")
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args()
    unknown = [name for name in args.names if name not in CONVS]
    if unknown or args.rounds < 3:
        p.error(f"unknown conv {unknown[0]!r}" if unknown else "--rounds must be at least 3 (two are warm-up)")
    allocator.tune()
    parallel.configure(2)
    rng = np.random.default_rng(0)
    for name in args.names or CONVS:
        n, h, w, c, o, k, padding = CONVS[name]
        leaves = [Tensor(rng.standard_normal((n, h, w, c)).astype(np.float32), True),
                  Tensor((rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32), True),
                  Tensor(np.zeros(o, np.float32), True)]
        oh, ow = h + 2 * padding - k + 1, w + 2 * padding - k + 1
        g = rng.standard_normal((n, oh, ow, o)).astype(np.float32)
        times = {False: [], True: []}
        for _ in range(args.rounds):
            for use in (False, True):
                times[use].append(step(leaves, padding, g, use))
        med = {use: [statistics.median(t[i] for t in runs[2:]) * 1e3 for i in (0, 1)] for use, runs in times.items()}
        print(f"{name}: direct {med[False][0]:.2f} + {med[False][1]:.2f} ms, winograd {med[True][0]:.2f} + "
              f"{med[True][1]:.2f} ms, ratio {sum(med[True]) / sum(med[False]):.2f}", flush=True)


if __name__ == "__main__":
    main()

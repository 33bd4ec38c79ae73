"""How far the engine's float32 convs round from float64: the direct path and Winograd, under any interpolation points.

Usage: python benchmarks/winograd_error.py [NAME ...] [--batch 8] [--seeds 3] [--points 0,1,-1,0.5,-2,2,-0.5]
Each conv of benchmarks/winograd.py (NAME picks some) runs in float32 by the direct path, by Winograd with the
engine's POINTS and, given --points, with those; a row gives the worst relative L2 error over the seeds of the value
and the input, weight and bias gradients (of sum(y * R), R fixed) against the direct path in float64.
"""
from __future__ import annotations

import argparse

import numpy as np

from fwbench.backends.engine import Tensor, conv2d, winograd
from winograd import CONVS

PARTS = ("value", "x grad", "w grad", "b grad")


def outputs(case: tuple, dtype, seed: int, use: bool) -> list[np.ndarray]:
    """The conv's value and its gradients, by Winograd (forced on) or by the direct path."""
    _, h, w, c, o, k, padding = case
    rng = np.random.default_rng(seed)
    leaves = [Tensor(rng.standard_normal((case[0], h, w, c)).astype(dtype), True),
              Tensor((rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(dtype), True),
              Tensor(rng.standard_normal(o).astype(dtype), True)]
    saved = winograd.MIN_GAIN, winograd.MIN_DEPTH, winograd.DTYPES
    winograd.MIN_GAIN, winograd.MIN_DEPTH, winograd.DTYPES = (0, 0, (dtype,)) if use else (float("inf"), 0, ())
    try:
        y = conv2d(*leaves, 1, padding)
        r = np.random.default_rng(seed + 100).standard_normal(y.shape).astype(dtype)
        (y * Tensor(r)).sum().backward()
    finally:
        winograd.MIN_GAIN, winograd.MIN_DEPTH, winograd.DTYPES = saved
    return [y.data] + [t.grad for t in leaves]


def errors(case: tuple, seeds: int, points: tuple[float, ...] | None) -> list[float]:
    """The worst relative L2 error of each part over the seeds: direct float32, or Winograd with these points."""
    saved = winograd.POINTS
    if points is not None:
        winograd.POINTS = points
        winograd.transforms.cache_clear()
    try:
        worst = np.zeros(len(PARTS))
        for seed in range(seeds):
            want = outputs(case, np.float64, seed, use=False)
            got = outputs(case, np.float32, seed, use=points is not None)
            worst = np.maximum(worst, [np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(got, want)])
        return worst.tolist()
    finally:
        winograd.POINTS = saved
        winograd.transforms.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"convs to measure (default all): {', '.join(CONVS)}")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--points", help="other interpolation points to compare, comma-separated")
    a = ap.parse_args()
    unknown = [n for n in a.names if n not in CONVS]
    if unknown:
        raise SystemExit(f"winograd_error.py: unknown conv {', '.join(unknown)}; choose from {', '.join(CONVS)}")
    variants = {"direct": None, "winograd": winograd.POINTS}
    if a.points:
        variants["winograd, --points"] = tuple(float(p) for p in a.points.split(","))
    print(f"| conv | path | {' | '.join(PARTS)} |")
    print("| --- | --- |" + " ---: |" * len(PARTS))
    for name in a.names or CONVS:
        case = (a.batch, *CONVS[name][1:])
        for label, points in variants.items():
            row = errors(case, a.seeds, points)
            print(f"| {name} | {label} | {' | '.join(f'{e:.1e}' for e in row)} |", flush=True)


if __name__ == "__main__":
    main()

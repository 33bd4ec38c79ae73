"""The NumPy engine's step in two of its ways to use the cores, spec by spec.

Usage:
  python benchmarks/engine_workers.py [--models vgg,pyex] [--modes split,ops] [--rounds 4] [--steps 100]

Modes: split (the step split by images over the worker processes, the default), ops (each op's shares on worker
processes, the convs', or threads), threads (every op's shares on worker threads). Each round times both in fresh
processes, one after the other, the order alternating from round to round; a spec's line gives each one's median
step ms and the median over rounds of the first / the second, [smallest, largest].
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


MODES = {"split": (True, True), "ops": (True, False), "threads": (False, False)}  # processes, data parallel


def one(model: str, steps: int, mode: str) -> float:
    """The engine's median step ms on this process's cores, in this mode."""
    sys.path.insert(0, str(HERE))
    import fwbench  # noqa: F401 - before NumPy, as a bench cell imports it (OpenBLAS's thread timeout)
    from numpy_profile import batches, ready

    from fwbench import backends
    from fwbench.backends.engine import parallel
    from fwbench.harness import allocator
    from fwbench.harness.bench.timing import time_steps
    allocator.tune()
    backends.load("numpy").pin_numerics()
    processes, parallel.DATA_PARALLEL = MODES[mode]
    parallel.configure(1)
    parallel.configure(parallel.cores(), processes=processes)
    warmup = 10
    backend, prepared = ready("numpy", model, batches(1 + warmup + steps))
    lrs = [1e-3] * len(prepared)
    return time_steps(backend, prepared, lrs, warmup, steps, min_warmup_s=0, min_timed_s=0)["step_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg,pyex,flaxex,tgmnist")
    ap.add_argument("--modes", default="split,ops", help="two of " + ", ".join(MODES))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(one(args.one[0], args.steps, args.one[1]))
        return
    modes = args.modes.split(",")
    if len(modes) != 2 or not set(modes) <= set(MODES):
        sys.exit(f"engine_workers: --modes takes two of {', '.join(MODES)}, got {args.modes!r}")
    for model in args.models.split(","):
        model = model if model.endswith(".toml") or (HERE.parent / "models" / f"{model}.toml").exists() \
            else str(HERE / "unseen" / f"{model}.toml")
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", model, mode],
                                      capture_output=True, text=True, check=True)
                times[mode].append(float(done.stdout.split()[-1]))
        first, second = modes
        ratios = [a / b for a, b in zip(times[first], times[second])]
        print(f"{Path(model).stem}: {first} {statistics.median(times[first]):.2f} ms, {second} "
              f"{statistics.median(times[second]):.2f} ms, ratio {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]", flush=True)


if __name__ == "__main__":
    main()

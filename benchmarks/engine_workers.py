"""The NumPy engine's step with its conv shares on worker processes against worker threads, spec by spec.

Usage:
  python benchmarks/engine_workers.py [--models vgg,pyex] [--rounds 4] [--steps 100]

Each round times both in fresh processes, one after the other, the order alternating from round to round; a spec's
line gives each one's median step ms and the median over rounds of processes / threads, [smallest, largest].
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(model: str, steps: int, processes: bool) -> float:
    """The engine's median step ms on this process's cores, its conv shares on processes or on threads."""
    sys.path.insert(0, str(HERE))
    import fwbench  # noqa: F401 - before NumPy, as a bench cell imports it (OpenBLAS's thread timeout)
    from numpy_profile import batches, ready

    from fwbench import backends
    from fwbench.backends.engine import parallel
    from fwbench.harness import allocator
    from fwbench.harness.bench.timing import time_steps
    allocator.tune()
    backends.load("numpy").pin_numerics()
    parallel.configure(1)
    parallel.configure(parallel.cores(), processes=processes)
    warmup = 10
    backend, prepared = ready("numpy", model, batches(1 + warmup + steps))
    lrs = [1e-3] * len(prepared)
    return time_steps(backend, prepared, lrs, warmup, steps, min_warmup_s=0, min_timed_s=0)["step_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg,pyex,flaxex,tgmnist")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "PROCESSES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(one(args.one[0], args.steps, args.one[1] == "1"))
        return
    for model in args.models.split(","):
        model = model if model.endswith(".toml") or (HERE.parent / "models" / f"{model}.toml").exists() \
            else str(HERE / "unseen" / f"{model}.toml")
        times: dict[str, list[float]] = {"1": [], "0": []}
        for r in range(args.rounds):
            for processes in ("1", "0") if r % 2 == 0 else ("0", "1"):
                done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", model, processes],
                                      capture_output=True, text=True, check=True)
                times[processes].append(float(done.stdout.split()[-1]))
        ratios = [p / t for p, t in zip(times["1"], times["0"])]
        print(f"{Path(model).stem}: processes {statistics.median(times['1']):.2f} ms, threads "
              f"{statistics.median(times['0']):.2f} ms, ratio {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]", flush=True)


if __name__ == "__main__":
    main()

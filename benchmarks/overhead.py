"""fwbench's step time over a hand-written loop's: same batches and lrs, rounds alternating in one process.

Usage: python benchmarks/overhead.py [--frameworks torch,flax,flax@scan-tuned] [--rounds 3] [--steps 200] [--json]
       [--out results/]
`fwbench bench` runs it as a stage of a suite with overhead frameworks (the default suite), into the run's own file.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fwbench import backends
from fwbench import models
import plain_data
from fwbench.backends.base import OptimizerConfig
from fwbench.harness import atomic
from fwbench.harness.data import augment
from fwbench.harness.bench.child import die_with_parent
from fwbench.harness.bench.timing import time_step_fn, time_steps as fwbench_time_steps
from fwbench.harness.data import batch_order, load_mnist, normalize
from fwbench.harness.provenance import git_commit, machine
from fwbench.harness.session import make_backend
from fwbench.harness.table import markdown_table

# fwbench backend (NAME@MODE): the hand-written loop it is compared with, and that loop's options. Like with
# like: stock flax modes against stock loops, "-tuned" ones against loops with fwbench's kernels.
FRAMEWORKS = {"torch": ("plain_torch", {}),
              "flax": ("plain_flax", {}), "flax@step-tuned": ("plain_flax", {"kernels": True}),
              "flax@scan": ("plain_flax_scan", {}), "flax@scan-tuned": ("plain_flax_scan", {"kernels": True})}
DEFAULT = ("torch", "flax", "flax@scan-tuned")


def recipe_batches(count: int, seed: int, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The plain loops' first `count` batches, checked equal to the ones fwbench's harness makes."""
    batches = plain_data.first_batches(count, seed, batch_size)
    data = load_mnist()
    images = augment.random_shift(normalize(data.train_x), 1, seed, 0)
    for k, idx in enumerate(batch_order(len(images), batch_size, seed, 0)[:count]):
        x, y = batches[k]
        if not (np.array_equal(x, images[idx]) and np.array_equal(y, data.train_y[idx])):
            raise AssertionError(f"plain_data's batch {k} differs from fwbench's; the comparison would be unfair")
    return batches


def plain_side(framework: str, batches: list, lrs: list[float], warmup: int, steps: int, device: str) -> dict:
    """The hand-written loop, from a fresh model."""
    name, options = FRAMEWORKS[framework]
    module = __import__(name)
    if name == "plain_flax_scan":  # it makes its own resident batches, the same first `steps` of the recipe
        return module.time_steps(steps, warmup, seed=0, batch_size=len(batches[0][1]), device=device, **options)
    return time_step_fn(module.ready_step(batches, lrs, seed=0, device=device, **options), steps, warmup)


def fwbench_side(framework: str, batches: list, lrs: list[float], warmup: int, steps: int, device: str) -> dict:
    """What a bench cell times: a fresh backend from canonical weights, batches prepared beforehand."""
    backend = make_backend(framework, models.get("cnn"), device=device, dtype="float32", seed=0,
                           init="canonical")
    backend.init_optimizer(OptimizerConfig("adam", lr=plain_data.LR))
    x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    size = len(batches[0][1])
    epoch = backend.prepare_epoch(x, y, [np.arange(i * size, (i + 1) * size) for i in range(len(batches))])
    return fwbench_time_steps(backend, epoch, lrs, warmup, steps, min_warmup_s=0, min_timed_s=0)  # as the plain loop


def compare(framework: str, rounds: int, warmup: int, steps: int, device: str, batch_size: int = 64) -> dict:
    """Rounds of plain then fwbench (the order flipping each round); medians over the rounds."""
    # Bench cells pin numerics first; doing it here applies the same process-wide settings to both loops.
    backends.load(framework).pin_numerics()
    count = 1 + warmup + steps
    batches, lrs = recipe_batches(count, 0, batch_size), plain_data.cosine_lrs(count, batch_size)
    sides = {"plain": plain_side, "fwbench": fwbench_side}
    each: dict[str, list[float]] = {"plain": [], "fwbench": []}
    for r in range(rounds):
        for side in (("plain", "fwbench") if r % 2 == 0 else ("fwbench", "plain")):
            gc.collect()  # the last round's models go before the clock starts, not during it
            each[side].append(sides[side](framework, batches, lrs, warmup, steps, device)["step_ms"])
    ratios = [f / p for f, p in zip(each["fwbench"], each["plain"])]
    return {"fwbench_step_ms": statistics.median(each["fwbench"]), "plain_step_ms": statistics.median(each["plain"]),
            "ratio": statistics.median(ratios), "ratio_each": ratios, "fwbench_step_ms_each": each["fwbench"],
            "plain_step_ms_each": each["plain"], "rounds": rounds, "steps": steps, "warmup": warmup, "device": device}


def table(overhead: dict) -> str:
    """A readable table of the comparison."""
    rows = [[name, f"{r['fwbench_step_ms']:.2f}", f"{r['plain_step_ms']:.2f}", f"{r['ratio']:.3f}",
             ", ".join(f"{x:.3f}" for x in r["ratio_each"])] for name, r in overhead.items()]
    return markdown_table(["framework", "fwbench step ms", "plain step ms", "ratio (median of rounds)",
                           "ratio each round"], rows, "lrrrl")


def write(out: Path, overhead: dict, doc: dict) -> list[Path]:
    """A new overhead-<time>.json in out. A bench run measures its own overhead (the suite's overhead stage), so
    nothing here rewrites a results file another process may be writing."""
    return [atomic.claim(out, atomic.stamped("overhead"), atomic.encode_json(doc))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frameworks", default=",".join(DEFAULT),
                   help=f"comma-separated, of {','.join(FRAMEWORKS)} (default {','.join(DEFAULT)})")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line, not a table")
    p.add_argument("--out", type=Path, help="folder to write a new overhead-<time>.json in")
    args = p.parse_args(argv)
    die_with_parent()  # run as a bench's stage, it goes when the bench goes, even killed outright
    if args.out:
        try:
            atomic.ensure_dir(args.out)  # before minutes of timing, not after
        except ValueError as e:
            p.error(str(e))
    overhead = {}
    for name in args.frameworks.split(","):
        if name not in FRAMEWORKS:
            p.error(f"unknown framework '{name}'; choose from {', '.join(FRAMEWORKS)}")
        overhead[name] = compare(name, args.rounds, args.warmup, args.steps, args.device)
    doc = {"overhead": overhead, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(),
           "machine": machine(), "frameworks": {n: backends.load(n).version() for n in overhead},
           "how": "step_ms is the median of the timed steps (set lr, train step, synchronize) in one round; "
                  "each side's value is the median over rounds, ratio the median of per-round fwbench/plain"}
    print(json.dumps(doc) if args.json else table(overhead))
    if args.out:
        for path in write(args.out, overhead, doc):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

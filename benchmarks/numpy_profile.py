"""Where the NumPy engine's training step spends its time, and its step time against torch's.

Usage:
  python benchmarks/numpy_profile.py profile [--model cnn] [--steps 200]       # cProfile, top functions
  python benchmarks/numpy_profile.py layers [--model cnn] [--steps 200]        # each op's forward and backward ms
  python benchmarks/numpy_profile.py compare [--models cnn,mlp] [--rounds 5] [--steps 300]
      # numpy and torch timed in alternating rounds in one process, as a bench cell times them

layers times each of the plan's ops, forward and backward, with the engine's workers on, as a bench cell runs it.
Where the step is split by images (backends/numpy_split.py), the ops timed are this process's, over its share of the
images, and "the rest" includes waiting for the worker's share.
profile runs the engine on one thread (cProfile sees only the calling thread), as it runs without pin_numerics.
compare pins both, so torch's threads and the engine's workers share the cores of one process: it reads the engine
slower than a bench cell, which has a process to itself; `fwbench bench` gives the figures of record.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time

# fwbench before NumPy: it sets OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS, as in a bench cell
# (fwbench/__init__.py). Imported after NumPy, the engine's dense layers took their slower path (each worker a slice
# of rows), and this script read flaxex's dense layer at 1.2 + 1.7 ms forward and backward, against 0.9 + 1.3.
from fwbench import backends
import numpy as np

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.engine import parallel
from fwbench.harness import allocator
from fwbench.harness.data import augment
from fwbench.harness.bench.timing import time_steps
from fwbench.harness.data import batch_order, load_mnist, normalize
from fwbench.harness.session import make_backend


def batches(count: int, batch_size: int = 64, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` batches of the recipe's epoch 0 (normalised, 1-pixel shifts)."""
    data = load_mnist()
    images = augment.random_shift(normalize(data.train_x), 1, seed, 0)
    order = batch_order(len(images), batch_size, seed, 0)[:count]
    return [(images[idx], data.train_y[idx]) for idx in order]


def ready(framework: str, model: str, raw: list, lr: float = 1e-3):
    """A fresh backend from the canonical weights, Adam, and its prepared batches."""
    backend = make_backend(framework, models.get(model), device="cpu", dtype="float32", seed=0, init="canonical")
    backend.init_optimizer(OptimizerConfig("adam", lr=lr))
    return backend, [backend.prepare_batch(x, y) for x, y in raw]


def profile(model: str, steps: int, top: int) -> None:
    raw = batches(steps + 10)
    backend, prepared = ready("numpy", model, raw)
    lrs = [1e-3] * len(prepared)
    backend.train_steps(prepared, 0, 10, lrs[:10])  # warm up
    prof = cProfile.Profile()
    prof.enable()
    backend.train_steps(prepared, 10, 10 + steps, lrs[10:10 + steps])
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    print(f"{model}: {total / steps * 1e3:.3f} ms/step under cProfile ({steps} steps)")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # by own time
    print(f"{'own ms/step':>11} {'cum ms/step':>11} {'calls/step':>10}  function")
    for (path, line, name), (cc, nc, tt, ct, _) in rows:
        print(f"{tt / steps * 1e3:11.3f} {ct / steps * 1e3:11.3f} {nc / steps:10.1f}  {path.split('/')[-1]}:{line}({name})")


def layers(model: str, steps: int) -> None:
    backends.load("numpy").pin_numerics()
    raw = batches(steps + 10)
    backend, prepared = ready("numpy", model, raw)
    spent: dict[str, list[float]] = {}
    backend._steps = [(_timed(op, f"{i:2d} {_name(op, layer)}", spent), i, layer, w, b)
                      for op, i, layer, w, b in backend._steps]
    lrs = [1e-3] * len(prepared)
    backend.train_steps(prepared, 0, 10, lrs[:10])  # warm up
    for times in spent.values():
        times[:] = [0.0, 0.0]
    start = time.perf_counter()
    backend.train_steps(prepared, 10, 10 + steps, lrs[10:10 + steps])
    total = (time.perf_counter() - start) / steps * 1e3
    split = " (split by images: each op's time is this process's share)" if backend.replicas.key else ""
    print(f"{model}: {total:.3f} ms/step with {parallel.threads()} workers ({steps} steps){split}")
    print(f"{'forward ms':>10} {'backward ms':>11}  op")
    for name, (fwd, bwd) in spent.items():
        print(f"{fwd / steps * 1e3:10.3f} {bwd / steps * 1e3:11.3f}  {name}")
    ops = sum(f + b for f, b in spent.values()) / steps * 1e3
    print(f"{'':>10} {total - ops:11.3f}  the rest: loss, the update, the graph")


def _name(op, layer) -> str:
    fn = getattr(op, "func", op)
    name = getattr(fn, "__name__", "?").lstrip("_")
    return type(layer).__name__ if name == "<lambda>" else f"{name} {getattr(op, 'keywords', '') or ''}".strip()


def _timed(op, name: str, spent: dict[str, list[float]]):
    """op, timed forward, and with the backward closures of every tensor it made timed too."""
    times = spent.setdefault(name, [0.0, 0.0])

    def run(h, *args):
        start = time.perf_counter()
        out = op(h, *args)
        times[0] += time.perf_counter() - start
        made, todo = set(), [out]
        while todo:  # the tensors this op made: everything between out and its input h
            t = todo.pop()
            if t is h or id(t) in made or not t._prev:
                continue
            made.add(id(t))
            t._backward = _clocked(t._backward, times)
            todo.extend(t._prev)
        return out
    return run


def _clocked(fn, times: list[float]):
    def backward(g):
        start = time.perf_counter()
        fn(g)
        times[1] += time.perf_counter() - start
    return backward


def compare(names: list[str], rounds: int, steps: int, warmup: int) -> None:
    backends.load("numpy").pin_numerics()
    backends.load("torch").pin_numerics()
    count = 1 + warmup + steps
    raw = batches(count)
    lrs = [1e-3 * 0.5 * (1 + np.cos(np.pi * k / count)) for k in range(count)]
    for model in names:
        each: dict[str, list[float]] = {"numpy": [], "torch": []}
        for r in range(rounds):
            for fw in (("numpy", "torch") if r % 2 == 0 else ("torch", "numpy")):
                gc.collect()
                backend, prepared = ready(fw, model, raw)
                each[fw].append(time_steps(backend, prepared, lrs, warmup, steps, min_warmup_s=0, min_timed_s=0)["step_ms"])
                del backend, prepared
        ratios = [a / b for a, b in zip(each["numpy"], each["torch"])]
        print(f"{model}: numpy {statistics.median(each['numpy']):.3f} ms, torch {statistics.median(each['torch']):.3f} ms, "
              f"ratio median {statistics.median(ratios):.3f}  each {' '.join(f'{x:.3f}' for x in ratios)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("profile", "layers", "compare"))
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    allocator.tune()
    if args.what == "profile":
        profile(args.model, args.steps, args.top)
    elif args.what == "layers":
        layers(args.model, args.steps)
    else:
        compare(args.models.split(","), args.rounds, args.steps, args.warmup)


if __name__ == "__main__":
    main()

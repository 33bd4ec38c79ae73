"""Suite presets and the cells they expand to."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from fwbench import backends
from fwbench.backends.engine.parallel import cores
from fwbench.backends.workers import CPU_DEFAULT
from fwbench.harness.bench.dispatch import Dispatch
from fwbench.harness.recipe import RECIPES, Recipe


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[str, ...] = ("cnn", "mlp")
    backends: tuple[str, ...] = ("numpy", "torch", "flax")
    batch_sizes: tuple[int, ...] = (64,)
    device: str = "cpu"
    repeat: int = 5               # runs (fresh processes) per cell, in interleaved rounds
    timed_steps: int = 50
    warmup_steps: int = 5
    min_timed_s: float = 0.5      # time at least this long, whatever timed_steps says (and warm up 0.2 s)
    train: bool = True            # run the recipe for accuracy, time-to-accuracy, epoch time and curves
    limit: int | None = None      # train on the first N images (quick looks), None for all of MNIST
    epochs: int | None = None     # override the recipe's epochs
    evals_per_epoch: int = 2      # test-set evaluations per epoch, to find the time-to-accuracy (off the clock)
    allow_nonconformant: bool = False  # bench a plugin even when it fails the conformance kit (rows are marked)
    timing_only: tuple[str, ...] = ()  # "backend/model" cells timed but not trained (a recipe too slow for the budget)
    order_seed: int = 0           # seeds the order in which each round visits the cells
    conformance: bool = True      # run the conformance kit for every backend and mode before timing them
    conventions: bool = True      # measure the frameworks' native conventions (fwbench conventions) for the report
    cell_timeout_s: float = 1800  # a cell process still running after this is stopped and recorded as timed out
    workers: int | None = None    # of data-parallel modes; None: every GPU, or 2 on a CPU
    dispatch: Dispatch = Dispatch()  # where each run executes: a child process here, or a submitit job
    overhead: tuple[str, ...] = ()  # after the rounds, time these against hand-written loops (benchmarks/overhead.py)
    overhead_rounds: int = 3      # rounds alternating the hand-written loop and fwbench
    overhead_steps: int = 60      # timed steps per side per round


# Each mode is its own row; a backend's default mode is stock framework code, and flax@scan-tuned (fwbench's
# own gradient kernels, see docs/performance.md) sits beside stock flax. torch@channels_last made no difference
# on the reference CPU (0.95-0.99x eager on the cnn) and torch@compile loses to eager on its cnn (1.17x), so
# both are in `full` only. Stock flax's cnn recipe (21-26 s an epoch on the reference CPU) would take two
# minutes of the budget, so the default suite times it without training it; keras@jax, on the same XLA
# convolutions, likewise where it is named.
PRESETS = {
    # About three minutes on 2 cores: the real models, one short epoch on a slice of MNIST, five runs a cell.
    "quick": Suite("quick", backends=("numpy", "torch", "flax", "flax@scan-tuned"), timed_steps=20, warmup_steps=3,
                   limit=6400, epochs=1, evals_per_epoch=2, repeat=5, conformance=False, conventions=False),
    # `make bench`: the default recipes on all of MNIST, every metric, on the CPU. Four runs a cell, not five:
    # five took 8.5 minutes with set-up on a noisy day, four 7.3 (the budget is 7); the verdicts then use Welch's test.
    "default": Suite("default", backends=("numpy", "torch", "flax", "flax@scan-tuned"), repeat=4,
                     timed_steps=30, min_timed_s=0.3, timing_only=("flax/cnn", "keras@jax/cnn"),
                     overhead=("torch", "flax@scan-tuned")),
    # More batch sizes and runs, every mode, and the GPU where there is one.
    "full": Suite("full", backends=("numpy", "torch", "torch@channels_last", "torch@compile", "flax", "flax@scan",
                                    "flax@step-tuned", "flax@scan-tuned", "flax@eigen", "keras", "keras@xla",
                                    "keras@loop", "keras@jax"),
                  batch_sizes=(64, 512), device="auto", repeat=7, timed_steps=100),
    # The zoo of models people train on MNIST (models/pyex.toml and the rest), each backend in its stock mode, to
    # their sources' accuracy targets. Three runs a cell: the recipe runs in the first, the others only time steps.
    "zoo": Suite("zoo", models=("pyex", "flaxex", "lenet5", "tgmnist"), backends=("numpy", "torch", "flax", "keras"),
                 repeat=3, timed_steps=30, min_timed_s=0.3),
    # benchmarks/gpu_bench.sh on the device machine: the modes that remove launch overhead, on cuda.
    "gpu": Suite("gpu", backends=("numpy", "torch", "torch@compile", "torch@cudagraphs", "flax", "flax@scan",
                                  "flax@scan-tuned"), device="cuda", timed_steps=100, repeat=3),
}
# The accuracy each model's recipe is judged by: the course's published figures, and the zoo's sources'.
TARGETS = {"cnn": 0.985, "mlp": 0.970, "pyex": 0.990, "flaxex": 0.990, "lenet5": 0.985, "tgmnist": 0.985}


@dataclass(frozen=True)
class Cell:
    backend: str
    model: str
    batch_size: int
    device: str
    timed_steps: int
    warmup_steps: int
    min_timed_s: float
    train: bool                   # the recipe runs once, in the cell's first run, at the recipe's own batch size
    limit: int | None
    recipe: dict
    target: float | None
    evals_per_epoch: int
    dtype: str = "float32"
    seed: int = 0
    timeout_s: float = 1800       # the suite's cell_timeout_s: generous, for a hung process, not a slow one
    workers: int | None = None    # a data-parallel mode's workers, over which batch_size (global) is split
    threads: int | None = None    # and each worker's threads, the same in its 1-worker baseline

    def label(self) -> str:
        workers = f" x{self.workers}" if self.workers else ""
        return f"{self.backend}{workers} {self.model} b{self.batch_size} {self.device}"

    def to_dict(self) -> dict:
        return asdict(self)


def recipe_of(model: str, suite: Suite) -> Recipe:
    recipe = RECIPES.get(model, Recipe())
    return replace(recipe, epochs=suite.epochs) if suite.epochs else recipe


def cells(suite: Suite) -> list[Cell]:
    """The matrix: model, then batch size, then backend; a data-parallel mode also gets its 1-worker baseline."""
    out = []
    for model in suite.models:
        recipe = recipe_of(model, suite)
        for bs in suite.batch_sizes:
            for backend in suite.backends:
                trains = suite.train and bs == recipe.batch_size and f"{backend}/{model}" not in suite.timing_only
                cell = Cell(backend, model, bs, suite.device, suite.timed_steps, suite.warmup_steps,
                            suite.min_timed_s, trains, suite.limit, asdict(recipe), TARGETS.get(model),
                            suite.evals_per_epoch, timeout_s=suite.cell_timeout_s)
                if not backends.data_parallel(backend):
                    out.append(cell)
                    continue
                workers = suite.workers or default_workers(suite.device)
                threads = max(1, cores() // workers)  # the cores shared among the workers
                out.append(replace(cell, workers=workers, threads=threads))
                if workers > 1 and bs // workers:  # weak scaling: one worker with a worker's batch and threads
                    out.append(replace(cell, batch_size=bs // workers, workers=1, threads=threads, train=False))
    return [c for i, c in enumerate(out) if c not in out[:i]]  # a baseline may be a cell the matrix has


def default_workers(device: str) -> int:
    """--workers' default, as the data-parallel modes take it: every GPU, or 2 on a CPU."""
    if device != "cuda":
        return CPU_DEFAULT
    try:  # torch or JAX counts the GPUs: whichever a data-parallel mode brought, imported only here
        import torch
        return max(1, torch.cuda.device_count())
    except ImportError:
        import jax
        return max(1, len(jax.devices("gpu")))


def rounds(suite: Suite, count: int) -> list[list[int]]:
    """For each round, every cell index once in a seeded random order, so slow drifts of the machine hit all alike."""
    rng = random.Random(suite.order_seed)
    out = []
    for _ in range(suite.repeat):
        order = list(range(count))
        rng.shuffle(order)
        out.append(order)
    return out

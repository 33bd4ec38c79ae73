"""One run of a benchmark cell, in a fresh process: `python -m fwbench.harness.bench.cell CELL.json OUT.json`."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fwbench import backends
from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.messages import one_line
from fwbench.backends.workers import env as worker_env
from fwbench.harness.allocator import tune
from fwbench.harness.atomic import atomic_write_json
from fwbench.harness.bench.child import die_with_parent
from fwbench.harness.bench import parallel
from fwbench.harness.bench.limits import flop_figures
from fwbench.harness.bench.timing import time_steps
from fwbench.harness.data import batch_order
from fwbench.harness.probes import contention
from fwbench.harness.probes.memory import peak_rss_mb
from fwbench.harness.provenance import machine
from fwbench.harness.recipe import Recipe
from fwbench.harness.session import make_backend, mnist_for, resolve_device
from fwbench.harness.train import train


def recipe_from(d: dict) -> Recipe:
    opt = dict(d["optimizer"], betas=tuple(d["optimizer"]["betas"]))
    return Recipe(**{**d, "optimizer": OptimizerConfig(**opt)})


def run(cell: dict) -> dict:
    """Step timing, then (when the cell trains) the recipe with periodic evaluation; everything JSON-able."""
    spec = models.get(cell["model"])
    start = time.perf_counter()
    cls = backends.load(cell["backend"])  # the framework's import: TensorFlow's takes seconds, and every run pays it
    import_s = time.perf_counter() - start
    device = resolve_device(cls, cell["device"])
    info = {"device": device, "framework_version": cls.version(), "numerics": cls.pin_numerics(),
            "allocator": tune(), "parameters": spec.param_count()}
    data = mnist_for(spec, cell["dtype"], os.environ.get("FWBENCH_DATA"), cell["limit"])
    recipe = recipe_from(cell["recipe"])
    build = dict(device=device, dtype=cell["dtype"], seed=cell["seed"], init="canonical")

    backend = make_backend(cell["backend"], spec, **build)
    backend.init_optimizer(recipe.optimizer)
    info |= {"mode": backend.mode, "fused": backend.fused, "mode_note": cls.MODE_NOTES.get(backend.mode),
             "data": data.source, "train_images": len(data.train_x), "test_images": len(data.test_x)}
    count = 1 + cell["warmup_steps"] + cell["timed_steps"]
    order = batch_order(len(data.train_x), cell["batch_size"], cell["seed"], 0)
    # Timed steps are all full batches, reused in turn when an epoch (--limit, a large batch) has too few.
    full = [idx for idx in order if len(idx) == cell["batch_size"]] or order
    epoch = backend.prepare_epoch(data.train_x, data.train_y, [full[i % len(full)] for i in range(count)])
    parallel.reset(backend)  # a data-parallel backend's worker clocks start afresh for the timed steps
    before = contention.snapshot()
    timing = time_steps(backend, epoch, [recipe.optimizer.lr], cell["warmup_steps"], cell["timed_steps"],
                        min_warmup_s=min(0.2, cell["min_timed_s"]), min_timed_s=cell["min_timed_s"])
    # Steal and other processes over the timed window alone: over the whole process (imports, data,
    # training) a burst of steal that slowed every timed step is diluted below any useful limit.
    timed_window = contention.between(before, contention.snapshot())
    samples = {"step_ms": timing.pop("samples")}
    metrics = {**timing, "import_s": import_s, "images_per_s": cell["batch_size"] / timing["step_ms"] * 1e3,
               **flop_figures(spec, cell["batch_size"], timing["step_ms"]), "peak_rss_mb": peak_rss_mb(),
               **parallel.figures(backend, cell["batch_size"], timing["step_ms"])}
    helpers = helpers_peak_rss_mb(backend)
    if helpers:  # processes the backend runs beside the cell's own (the NumPy engine's workers): their memory too
        metrics["helpers_peak_rss_mb"] = helpers
        metrics["peak_rss_mb"] += sum(helpers)
    peaks = [backend.peak_device_memory()]
    del backend, epoch

    out = {"info": info, "samples": samples, "timed_contention": timed_window}
    if cell["train"]:
        backend = make_backend(cell["backend"], spec, **build)
        result = train(backend, recipe, data.train_x, data.train_y, data.test_x, data.test_y, seed=cell["seed"],
                       progress=False, evals_per_epoch=cell["evals_per_epoch"], target=cell["target"])
        seconds = [e.epoch_seconds for e in result.epochs]
        # With one epoch there is no epoch after the first: its time includes tracing, so it is not an epoch_s.
        metrics |= {"epoch_s": float(np.median(seconds[1:])) if len(seconds) > 1 else None,
                    "first_epoch_s": seconds[0], "epoch_s_each": seconds,
                    "test_accuracy": result.test_accuracy, "accuracy_target": cell["target"],
                    "time_to_accuracy_s": result.time_to_accuracy,
                    "train_peak_rss_mb": peak_rss_mb() + sum(helpers_peak_rss_mb(backend))}
        out["curves"] = {"loss": result.loss_curve, "accuracy": result.accuracy_curve}
        trained = backend.get_params()
        conv = next((k for k, v in trained.items() if v.ndim == 4), None)
        out["filters"] = trained[conv].tolist() if conv else None
        peaks.append(backend.peak_device_memory())
    peak = max((p for p in peaks if p is not None), default=None)
    metrics["gpu_peak_mb"] = peak / 2**20 if peak is not None else None
    return out | {"metrics": metrics}


def helpers_peak_rss_mb(backend) -> list[float]:
    """The memory peaks of the processes a backend runs beside the cell's own, in MiB; [] for most backends."""
    return backend.helpers_peak_rss_mb() if hasattr(backend, "helpers_peak_rss_mb") else []


def attempt(cell: dict) -> dict:
    """run(cell) as the run's record: ok with its figures, or an error in one line."""
    try:
        return {"status": "ok", "error": None, **run(cell)}
    except Exception as e:  # recorded in the results; the matrix goes on
        return {"status": "error", "error": one_line(e)}


def job(cell: dict) -> dict:
    """One run as a submitit job, in the job's own process: main's record, returned, with the node's machine."""
    if cell.get("workers"):  # what run_cell puts in a child's environment, set here on whatever node this is
        os.environ.update(worker_env(cell["workers"], cell["threads"]))
    return attempt(cell) | {"machine": machine()}


def main(argv: list[str]) -> int:
    die_with_parent()
    cell = json.loads(Path(argv[0]).read_text())
    atomic_write_json(Path(argv[1]), attempt(cell))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

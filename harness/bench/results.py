"""The results document of one bench run: provenance, metric definitions, cells; written atomically."""
from __future__ import annotations

import time
from pathlib import Path

from harness.atomic import atomic_write_json
from harness.provenance import git_commit, machine

SCHEMA = "fwbench.results/1"
METRICS = {
    "first_step_s": ("s", "wall time of the first call on a fresh model, synchronized: includes JIT compilation "
                          "(one step, or steps_per_call steps for a fused mode)"),
    "compile_s": ("s", "first_step_s minus an ordinary call of the same number of steps: compilation and first-touch"),
    "step_ms": ("ms", "median over the timed calls after warm-up, per step; a call is train_steps + synchronize(), "
                      "one step (set_lr + train_step) or, in a fused mode, steps_per_call steps in one compiled loop or graph; "
                      "batches prepared on the device beforehand"),
    "step_ms_iqr": ("ms", "interquartile range of the timed calls, per step"),
    "steps_per_call": ("steps", "steps per timed call: 1, or the timed steps for a fused mode"),
    "images_per_s": ("images/s", "batch size / median step time"),
    "epoch_s": ("s", "median training time of the recipe's epochs after the first; the epoch's batches are on the "
                     "device before its clock starts, and test evaluations are off the clock"),
    "epoch_s_each": ("s", "training time of every epoch, the first included"),
    "peak_rss_mb": ("MiB", "peak resident set size of the cell's own fresh process (data, framework, model, training)"),
    "gpu_peak_mb": ("MiB", "the framework's peak allocated device memory (torch max_memory_allocated, "
                           "XLA peak_bytes_in_use); null on the CPU"),
    "test_accuracy": ("fraction", "test accuracy after the recipe's last epoch"),
    "accuracy_target": ("fraction", "the course's published accuracy for the model"),
    "time_to_accuracy_s": ("s", "training time until the test accuracy, evaluated evals_per_epoch times an epoch, "
                                "first reached the target; null if never"),
    "agreement_worst_rel_l2": ("ratio", "worst relative L2 difference of any gradient, logits or loss against the "
                                        "float64 NumPy reference: fwbench agree, float32, one MNIST batch of 32"),
}


def new(suite: str, config: dict) -> dict:
    """An empty document for a run that is starting."""
    return {"schema": SCHEMA, "suite": suite, "status": "running", "started": _now(), "finished": None,
            "git": git_commit(), "machine": machine(), "config": config, "frameworks": {},
            "metrics": {k: {"unit": u, "how": h} for k, (u, h) in METRICS.items()},
            "agreement": {}, "cells": []}


def path_for(directory: Path, suite: str) -> Path:
    return directory / f"bench-{suite}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def save(doc: dict, path: Path) -> None:
    """Replace path with doc in one step, so a reader never sees half a file."""
    atomic_write_json(path, doc)


def finish(doc: dict, status: str) -> None:
    doc["status"], doc["finished"] = status, _now()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

"""A realistic fwbench.results/2 document (and its version 1 form): cnn and mlp on numpy, torch and flax, one failed."""
from __future__ import annotations

import json
import math

import numpy as np

from fwbench import models
from fwbench.harness import documents
from fwbench.harness.bench import results
from fwbench.harness.bench.metrics import documented

BACKENDS = ("numpy", "torch", "flax")
VERSIONS = {"numpy": "numpy 2.4.6", "torch": "torch 2.13.0+cpu", "flax": "flax 0.12.8 / jax 0.10.2 / optax 0.2.8"}

# (step_ms, epoch_s, first_step_s, peak_rss_mb, test_accuracy, time_to_accuracy_s, worst_rel_l2) per cell;
# torch cnn has the lowest step time, flax mlp the highest accuracy.
FIGURES = {
    ("cnn", "numpy"): (13.0, 13.0, 0.021, 640.0, 0.9871, 40.1, 2.1e-07),
    ("cnn", "torch"): (6.71, 6.3, 0.012, 812.0, 0.9871, 19.2, 6.8e-07),
    ("cnn", "flax"): (24.4, 24.4, 3.9, 1020.0, 0.9869, 75.0, 2.0e-07),
    ("mlp", "numpy"): (1.15, 1.1, 0.002, 310.0, 0.9772, None, 1.4e-07),
    ("mlp", "torch"): (1.18, 1.1, 0.004, 520.0, 0.9770, 3.3, 4.0e-07),
    ("mlp", "flax"): (0.64, 0.6, 1.2, 700.0, 0.9775, 2.1, 3.1e-07),
}
FAILED_ERROR = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.1GiB"


def _curves(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    loss = [[s, round(2.3 * math.exp(-s / 300) + 0.05 + 0.01 * rng.random(), 5)] for s in range(0, 4700, 100)]
    acc = [[6.3 * k, k, 0.95 + 0.009 * k] for k in (1, 2, 3, 4)]
    return {"loss": loss, "accuracy": acc}


def _filters(seed: int) -> list:
    """32 edge-detector-like 3x3 filters, (out, in, kh, kw)."""
    rng = np.random.default_rng(seed)
    sobel = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    out = [np.rot90(sobel, k % 4) * rng.uniform(0.5, 1.5) + 0.05 * rng.standard_normal((3, 3)) for k in range(32)]
    return np.array(out)[:, None].round(4).tolist()


MODES = {"torch": "eager", "flax": "step"}


def _cell(model: str, backend: str, index: int) -> dict:
    step, epoch, first, rss, acc, tta, rel = FIGURES[model, backend]
    return {
        "backend": backend, "model": model, "batch_size": 64, "device": "cpu", "dtype": "float32", "repeat": 0,
        "framework_version": VERSIONS[backend], "numerics": {"matmul_precision": "float32"},
        "seed": 0, "timed_steps": 50, "warmup_steps": 5, "evals_per_epoch": 4, "limit": None, "train": True,
        "recipe": {"epochs": 5, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}, "schedule": "cosine"},
        "target": 0.985, "parameters": models.get(model).param_count(),
        "data": "cache /tmp/mnist", "train_images": 60000, "test_images": 10000,
        "status": "ok", "error": None,
        "mode": MODES.get(backend), "fused": False,
        "metrics": {"first_step_s": first, "compile_s": first - step / 1e3, "steps_per_call": 1, "step_ms": step, "step_ms_iqr": 0.21, "images_per_s": 64000 / step,
                    "epoch_s": epoch, "epoch_s_each": [epoch * 1.02, epoch, epoch, epoch * 0.99],
                    "peak_rss_mb": rss, "gpu_peak_mb": None, "test_accuracy": acc, "accuracy_target": 0.985,
                    "time_to_accuracy_s": tta, "agreement_worst_rel_l2": rel},
        "curves": _curves(index),
        "filters": _filters(index) if model == "cnn" else None,
    }


def _failed_cell() -> dict:
    cell = _cell("cnn", "flax", 99)
    cell.update(batch_size=512, status="error", error=FAILED_ERROR, metrics=None, curves=None, filters=None)
    return cell


def _agreement(model: str) -> dict:
    worst = {b: FIGURES[model, b][6] for b in BACKENDS}
    pairs = [f"{b}~reference" for b in BACKENDS] + ["numpy~torch", "numpy~flax", "torch~flax"]
    table = {}
    for i, name in enumerate(models.get(model).param_shapes()):
        table[name] = {p: 10.0 ** -(6 + (i + j) % 3) * (1 + 0.1 * j) for j, p in enumerate(pairs)}
    return {"worst_rel_l2": worst, "table": table,
            "ties": {b: {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"} for b in BACKENDS}}


RUNS = 5
JITTER = (1.0, 1.012, 0.991, 1.004, 0.997)  # run-to-run spread of step time, about 1%
TRAINING = ("epoch_s", "epoch_s_each", "test_accuracy", "accuracy_target", "time_to_accuracy_s")


def _v2_cell(old: dict) -> dict:
    """The version 2 cell: RUNS runs, the first trains; step time and memory vary a little from run to run."""
    cell = {k: v for k, v in old.items() if k not in ("repeat", "metrics", "status", "error")}
    cell["runs"] = []
    for r, jitter in enumerate(JITTER[:RUNS]):
        if old["status"] != "ok":
            run = {"status": "error", "error": old["error"], "metrics": {}}
        else:
            m = {k: v for k, v in old["metrics"].items() if k != "agreement_worst_rel_l2" and (r == 0 or k not in TRAINING)}
            m |= {"step_ms": m["step_ms"] * jitter, "peak_rss_mb": m["peak_rss_mb"] + r}
            samples = [round(m["step_ms"] * (1 + 0.01 * ((i * 7) % 5 - 2)), 4) for i in range(20)]
            run = {"status": "ok", "error": None, "metrics": m, "samples": {"step_ms": samples}}
        cell["runs"].append({"round": r, "trained": r == 0, **run,
                             "contention": {"contended": False, "others_cpu": 0.01, "steal": 0.0}})
    results.summarize(cell)
    if cell["status"] == "ok":
        cell["metrics"]["agreement_worst_rel_l2"] = old["metrics"]["agreement_worst_rel_l2"]
        cell["conformance"] = "passed"
    return cell


def build() -> dict:
    """The whole version 2 results document."""
    doc = build_v1()
    doc |= {"schema": documents.RESULTS, "metrics": documented(), "conformance": {},
            "calibration": {"start": {"matmul_gflops": 190.0, "bandwidth_gbs": 16.0},
                            "end": {"matmul_gflops": 186.0, "bandwidth_gbs": 15.8}},
            "cells": [_v2_cell(c) for c in doc["cells"]]}
    return doc


def build_v1() -> dict:
    """The same run as a fwbench.results/1 document (one record per cell and repeat, no runs)."""
    cells = [_cell(m, b, i) for i, (m, b) in enumerate(FIGURES)] + [_failed_cell()]
    return {
        "schema": "fwbench.results/1", "suite": "default", "status": "complete",
        "started": "2026-11-26T05:40:00+0000", "finished": "2026-11-26T05:44:10+0000",
        "git": {"commit": "abc1234def5678900000000000000000deadbeef", "dirty": True},
        "machine": {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "ram_gb": 23.5, "gpu": None,
                    "os": "Linux-6.18-x86_64-with-glibc2.36", "python": "3.11.7"},
        "frameworks": dict(VERSIONS),
        "metrics": {"step_ms": {"unit": "ms", "how": "median of 50 timed train steps after 5 warm-up steps"},
                    "epoch_s": {"unit": "s", "how": "median epoch after the first, data in memory, no evaluation"}},
        "agreement": {m: _agreement(m) for m in ("cnn", "mlp")},
        "overhead": {"torch": {"fwbench_step_ms": 6.7, "plain_step_ms": 6.6, "ratio": 1.015},
                     "flax": {"fwbench_step_ms": 24.4, "plain_step_ms": 24.0, "ratio": 1.017}},
        "cells": cells,
    }


def write(path, data: dict | None = None):
    """Write a results document (the fixture's by default) to path and return the path."""
    path.write_text(json.dumps(build() if data is None else data))
    return path

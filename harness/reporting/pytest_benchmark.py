"""The run as pytest-benchmark JSON, so `pytest-benchmark compare` and dashboards built on it can read it."""
from __future__ import annotations

import json

import numpy as np

from fwbench.harness.bench.results import used_runs
from fwbench.harness.reporting.tables import backend_label

# The pytest-benchmark release whose file format this follows (its storage reads these fields).
VERSION = "5.3.1"


def stats(seconds: list[float]) -> dict:
    """pytest-benchmark's Stats fields over per-step times in seconds, computed the way it computes them."""
    x = np.sort(np.asarray(seconds, dtype=float))
    mean, sd = float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
    q1, median, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    inside = x[(x >= low) & (x <= high)]
    iqr_out, sd_out = int(((x < low) | (x > high)).sum()), int(((x < mean - sd) | (x > mean + sd)).sum())
    return {"min": float(x[0]), "max": float(x[-1]), "mean": mean, "stddev": sd, "rounds": len(x),
            "median": median, "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
            "outliers": f"{sd_out};{iqr_out}", "ld15iqr": float(inside[0]), "hd15iqr": float(inside[-1]),
            "ops": 1 / mean, "total": float(x.sum()), "data": [float(v) for v in x], "iterations": 1}


def benchmark(cell: dict) -> dict | None:
    """One pytest-benchmark entry per cell: every timed step of every run its figures came from."""
    steps = [t / 1e3 for r in used_runs(cell) for t in (r.get("samples") or {}).get("step_ms", [])]
    if cell["status"] != "ok" or not steps:
        return None
    name = f"{backend_label(cell)} {cell['model']} b{cell['batch_size']} {cell['device']}"
    params = {k: cell.get(k) for k in ("backend", "model", "batch_size", "device", "dtype")}
    extra = {"runs": len(used_runs(cell)), "contended": bool(cell.get("contended")), "unit": "seconds per step",
             "fwbench_metrics": cell.get("metrics")}
    return {"group": cell["model"], "name": name, "fullname": f"fwbench::{name}", "params": params,
            "param": cell["backend"], "extra_info": extra, "options": {"timer": "perf_counter", "warmup": True},
            "stats": stats(steps)}


def render(runs: list[tuple[str, dict]]) -> str:
    """One JSON document over every results file given (pytest-benchmark has one per session)."""
    first = runs[0][1]
    git = first.get("git") or {}
    doc = {"machine_info": {**(first.get("machine") or {}), "node": "fwbench", "calibration": first.get("calibration")},
           "commit_info": {"id": git.get("commit"), "dirty": git.get("dirty"), "project": "fwbench"},
           "benchmarks": [b for _, r in runs for c in r["cells"] if (b := benchmark(c))],
           "datetime": first.get("started"), "version": VERSION}
    return json.dumps(doc, indent=1) + "\n"

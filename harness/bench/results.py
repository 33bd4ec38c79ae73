"""The results document of one bench run: provenance, calibration, metric definitions, cells and their runs."""
from __future__ import annotations

import math
import time
from pathlib import Path

from fwbench.harness import atomic, documents, stats
from fwbench.harness.atomic import atomic_write_json
from fwbench.harness.bench.limits import gflops
from fwbench.harness.bench.metrics import BY_KEY, documented
from fwbench.harness.provenance import git_commit, machine

IDENTITY = ("backend", "model", "batch_size", "device", "dtype", "workers")  # workers: data-parallel cells only
MIN_CLEAN = 3  # clean runs a cell needs before its contended runs are left out of its figures
SETTINGS = ("steps", "steps_per_call", "epoch_s_each", "step_gflop")  # the same in every run: no interval


def new(suite: str, config: dict) -> dict:
    """An empty document for a run that is starting."""
    return {"schema": documents.RESULTS, "suite": suite, "status": "running", "started": _now(), "finished": None,
            "git": git_commit(), "machine": machine(), "config": config, "frameworks": {},
            "calibration": {}, "metrics": documented(), "agreement": {}, "conformance": {}, "cells": []}


def save(doc: dict, path: Path) -> None:
    """Replace path with doc in one step, so a reader never sees half a file."""
    atomic_write_json(path, doc)


class Store:
    """A run's results file: a name no other run has, saved whole each time, and a fallback file if it fails."""

    def __init__(self, directory: Path, doc: dict, log=print):
        self.path = atomic.claim(directory, atomic.stamped(f"bench-{doc['suite']}"), atomic.encode_json(doc))
        self.log, self.failed = log, None

    def save(self, doc: dict) -> None:
        """Replace the file with doc; on the first failure move to a new file under the state dir and say so."""
        try:
            save(doc, self.path)
        except OSError as e:
            if self.failed:
                raise
            self.failed = f"{self.path} could not be written ({atomic.why(self.path, e)})"
            # A results file is never lost: the run goes on into a file of the same name where it can be written.
            self.path = atomic.keep_elsewhere(self.path.name, atomic.encode_json(doc))
            self.log(f"{self.failed}; the run goes on, saved to {self.path}")

    def check(self) -> None:
        """Raise ResultsMoved when the results are not where --out said."""
        if self.failed:
            raise atomic.ResultsMoved(f"{self.failed}; every result of the run is in {self.path}")


def finish(doc: dict, status: str) -> None:
    doc["status"], doc["finished"] = status, _now()


def key(cell: dict) -> tuple:
    return tuple(cell.get(k) for k in IDENTITY)


def used_runs(cell: dict) -> list[dict]:
    """The runs a cell's figures come from: its successful runs, contended ones left out while enough others remain."""
    ok = [r for r in cell.get("runs", []) if r.get("status") == "ok"]
    clean = [r for r in ok if not (r.get("contention") or {}).get("contended")]
    return clean if len(clean) >= min(MIN_CLEAN, len(ok)) else ok


def summarize(cell: dict) -> None:
    """Set the cell's status, metrics, uncertainty and contended flag from its runs."""
    runs = cell.get("runs", [])
    used = used_runs(cell)
    if not used:
        cell.update(status="error", error=next((r.get("error") for r in runs if r.get("error")), "no run finished"),
                    metrics={}, uncertainty={}, contended=False)
        return
    # The recipe runs once, so its figures come from the training run even when its timing was left out.
    trained = [r for r in runs if r.get("status") == "ok" and r.get("trained")]
    metrics, uncertainty = {}, {}
    for name in dict.fromkeys(k for r in used + trained for k in r["metrics"]):
        metric = BY_KEY.get(name)
        source = trained if metric is not None and metric.training else used
        values = [r["metrics"][name] for r in source if _number(r["metrics"].get(name))]
        if not values:
            metrics[name] = next((r["metrics"][name] for r in source if r["metrics"].get(name) is not None), None)
            continue
        metrics[name] = stats.median(values) if len(values) > 1 and name not in SETTINGS else values[0]
        if len(values) > 1 and name not in SETTINGS:
            ci = stats.median_ci(values)
            uncertainty[name] = {"n": len(values), "ci": list(ci) if ci else None, "spread": stats.spread(values),
                                 "runs": values}
    if _number(metrics.get("step_ms")):
        metrics["images_per_s"] = cell["batch_size"] / metrics["step_ms"] * 1e3
        if _number(metrics.get("step_gflop")):
            metrics["gflops"] = gflops(metrics["step_gflop"], metrics["step_ms"])
    contended = lambda runs: any((r.get("contention") or {}).get("contended") for r in runs)  # noqa: E731
    cell.update(status="ok", error=None, metrics=metrics, uncertainty=uncertainty, contended=contended(used),
                training_contended=contended(trained))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

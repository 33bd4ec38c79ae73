"""Read a fwbench.results/1 file as version 2: each old cell (one per repeat) becomes one run of its cell."""
from __future__ import annotations

from fwbench.harness import documents
from fwbench.harness.bench import results
from fwbench.harness.bench.metrics import documented

RUN_ONLY = ("status", "error", "metrics", "repeat", "train", "curves", "filters")


def upgrade(doc: dict) -> dict:
    """The version 2 document; contention was not recorded then, and peak memory was ru_maxrss (parent included)."""
    cells: dict[tuple, dict] = {}
    for old in doc.get("cells", []):
        cell = cells.setdefault(results.key(old), {k: v for k, v in old.items() if k not in RUN_ONLY} | {"runs": []})
        metrics = dict(old.get("metrics") or {})
        worst = metrics.pop("agreement_worst_rel_l2", None)
        cell["runs"].append({"round": old.get("repeat") or 0, "trained": bool(old.get("train")),
                             "status": old["status"], "error": old.get("error"), "metrics": metrics, "samples": {},
                             "contention": {"contended": False, "recorded": False}})
        for k in ("curves", "filters"):
            if old.get(k) is not None:
                cell[k] = old[k]
        cell["_worst"] = worst if worst is not None else cell.get("_worst")
    out = {k: v for k, v in doc.items() if k != "cells"}
    out |= {"schema": documents.RESULTS, "upgraded_from": documents.RESULTS_V1, "metrics": documented(), "cells": []}
    out["status"] = doc.get("status") if doc.get("status") in ("running", "complete", "interrupted") else "complete"
    out.setdefault("started", "unknown")
    out.setdefault("suite", "unknown")
    for cell in cells.values():
        worst = cell.pop("_worst")
        results.summarize(cell)
        if cell["status"] == "ok":
            cell["metrics"]["agreement_worst_rel_l2"] = worst
        out["cells"].append(cell)
    return out

"""`fwbench report --json`: the model tables and their verdicts, or a --compare, as values rather than text."""
from __future__ import annotations

import dataclasses
import json
import math

from fwbench.harness import fmt
from fwbench.harness.bench.metrics import BY_KEY, COLUMNS
from fwbench.harness.reporting.baseline import judged_against
from fwbench.harness.reporting.tables import CONFORMANCE, best_keys, labeller, models_in, param_count
from fwbench.harness.reporting.verdicts import Verdict

KEYS = [c.key for c in COLUMNS] + ["gpu_peak_mb"]  # the model tables' metrics, GPU memory beside host memory


def render(runs: list[tuple[str, dict]], baseline: str | None = None) -> str:
    """Every results file's model tables: per cell its figures, intervals, verdict and the columns it leads."""
    return _dump({"runs": [run(name, results, baseline) for name, results in runs]})


def run(name: str, results: dict, baseline: str | None = None) -> dict:
    """One results file: what ran where, and a table per model."""
    judged = judged_against(results, baseline)
    return {"file": name, "suite": results.get("suite"), "status": results.get("status"),
            "started": results.get("started"), "commit": (results.get("git") or {}).get("commit"),
            "tables": [table(results, model, judged) for model in models_in(results)]}


def table(results: dict, model: str, judged: tuple[dict[int, Verdict], set[int]]) -> dict:
    """One model's rows, in the Markdown table's order."""
    cells = [c for c in results["cells"] if c["model"] == model]
    label, (verdicts, bases) = labeller(results["cells"]), judged
    rows = []
    for cell, best in zip(cells, best_keys(cells)):
        row = {"label": label(cell), **{k: cell.get(k) for k in ("backend", "mode", "batch_size", "device", "dtype")},
               "status": cell["status"], "error": fmt.one_line(cell.get("error")) if cell["status"] != "ok" else None}
        if cell["status"] == "ok":
            metrics, unc = cell.get("metrics") or {}, cell.get("uncertainty") or {}
            verdict = verdicts.get(id(cell))
            row |= {"metrics": {k: metrics.get(k) for k in KEYS},
                    "intervals": {k: u["ci"] for k, u in unc.items() if k in KEYS and u.get("ci")},
                    "verdict": "baseline" if id(cell) in bases else _verdict(verdict) if verdict else None,
                    "best": sorted(best), "contended": bool(cell.get("contended")),
                    "training_contended": bool(cell.get("training_contended")),
                    "conformance": CONFORMANCE.get(cell.get("conformance"))}
        rows.append(row)
    return {"model": model, "parameters": param_count(results, model), "rows": rows}


def compared(name_a: str, name_b: str, found: dict) -> str:
    """A --compare as JSON: every line with its values, ratios and verdict, the regressions, the machine."""
    lines = [_line(x) for x in found["lines"]]
    return _dump({"a": name_a, "b": name_b, "band": found["band"], "shift": found["shift"],
                  "machine": found["machine"], "regressions": [x for x in lines if x["regression"]],
                  "lines": lines, "only_a": found["only_a"], "only_b": found["only_b"]})


def _line(x) -> dict:
    key = next((m.key for m in BY_KEY.values() if m.header == x.metric), x.metric)
    a, b, raw, adjusted = x.values or (x.a, x.b, None, None)  # a status line carries its words
    return {"cell": x.cell, "metric": key, "a": a, "b": b, "raw": raw, "adjusted": adjusted,
            "verdict": _verdict(x.verdict), "regression": x.regression}


def _verdict(v: Verdict) -> dict:
    return dataclasses.asdict(v) | {"text": v.text()}


def _dump(doc: dict) -> str:
    return json.dumps(_finite(doc)) + "\n"  # one line, like every other --json


def _finite(value):
    """JSON has no NaN or infinity: null in their place."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

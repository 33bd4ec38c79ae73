"""CSV: one row per cell, identity columns, every metric flattened to one column, then each interval and spread."""
from __future__ import annotations

import csv
import io
import json

from fwbench.harness.bench.results import used_runs

IDENTITY = ["run", "suite", "commit", "backend", "model", "batch_size", "device", "dtype", "mode", "runs",
            "contended", "conformance", "framework_version", "status", "error"]


def _flat(value) -> str | float | int:
    """Lists join with ';' (epoch_s_each), objects become JSON, None is empty, everything else as is."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def rows(runs: list[tuple[str, dict]]) -> tuple[list[str], list[dict]]:
    """Column names and one dict per cell across every run; metric columns in first-seen order."""
    metrics = list(dict.fromkeys(k for _, r in runs for c in r["cells"] for k in (c.get("metrics") or {})))
    judged = list(dict.fromkeys(k for _, r in runs for c in r["cells"] for k in (c.get("uncertainty") or {})))
    extra = [f"{k}_{part}" for k in judged for part in ("ci_low", "ci_high", "spread")]
    out = []
    for name, results in runs:
        commit = ((results.get("git") or {}).get("commit") or "")[:12]
        for cell in results["cells"]:
            row = {"run": name, "suite": results.get("suite"), "commit": commit,
                   **{k: cell.get(k) for k in IDENTITY[3:]}, "runs": len(used_runs(cell))}
            row.update((k, (cell.get("metrics") or {}).get(k)) for k in metrics)
            for k in judged:
                unc = (cell.get("uncertainty") or {}).get(k) or {}
                ci = unc.get("ci") or (None, None)
                row.update({f"{k}_ci_low": ci[0], f"{k}_ci_high": ci[1], f"{k}_spread": unc.get("spread")})
            out.append({k: _flat(v) for k, v in row.items()})
    return IDENTITY + metrics + extra, out


def render(runs: list[tuple[str, dict]]) -> str:
    """The whole CSV document."""
    columns, data = rows(runs)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(data)
    return buf.getvalue()

"""The NumPy engine against torch eager, per spec, from a bench results file: docs/performance.md's table.

Usage: python benchmarks/numpy_vs_torch.py results/performance/bench-quick-*.json
Each ratio is the median over the run's rounds of numpy's step over torch's in the same round (rounds interleave
the cells, so both saw the same state of the machine), with the smallest and largest round and the number of rounds;
a run marked contended, and so its round, is left out (the bench measures such a run again, in a round of its own).
"""
from __future__ import annotations

import json
import statistics
import sys

from fwbench.harness.table import markdown_table


def rounds(cell: dict) -> dict[int, float]:
    """Round -> that round's step ms, for the cell's successful runs that were not contended."""
    return {r["round"]: r["metrics"]["step_ms"] for r in cell.get("runs", [])
            if r.get("status") == "ok" and not (r.get("contention") or {}).get("contended")}


def rows(doc: dict) -> list[list[str]]:
    """One row per model with both a numpy and a torch (eager) cell."""
    by = {(c["model"], c["backend"]): c for c in doc["cells"] if c.get("status") == "ok"}
    out = []
    for model in dict.fromkeys(c["model"] for c in doc["cells"]):
        np_cell, torch_cell = by.get((model, "numpy")), by.get((model, "torch"))
        if not (np_cell and torch_cell):
            continue
        a, b = rounds(np_cell), rounds(torch_cell)
        ratios = sorted(a[r] / b[r] for r in a.keys() & b.keys())
        m, t = np_cell["metrics"], torch_cell["metrics"]
        out.append([model, f"{m['step_gflop']:.3f}", f"{m['step_ms']:.2f}", f"{t['step_ms']:.2f}",
                    f"**{statistics.median(ratios):.2f}** [{ratios[0]:.2f}, {ratios[-1]:.2f}] ({len(ratios)})",
                    _percent(m.get("mfu")), _percent(t.get("mfu")),
                    f"{m['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f}"])
    return out


def _percent(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    doc = json.load(open(sys.argv[1]))
    print(markdown_table(["spec", "GFLOP a step", "numpy ms", "torch ms", "numpy / torch (rounds)", "numpy % of peak",
                          "torch % of peak", "peak MB numpy / torch"], rows(doc)))


if __name__ == "__main__":
    main()

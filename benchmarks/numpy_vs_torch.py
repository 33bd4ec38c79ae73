"""The NumPy engine against torch eager, per spec, from a bench results file: docs/performance.md's table.

Usage: python benchmarks/numpy_vs_torch.py [--with-contended] results/performance/bench-quick-*.json
Each ratio is the median over the run's rounds of numpy's step over torch's in the same round (rounds interleave
the cells, so both saw the same state of the machine), with the smallest and largest round and the number of rounds;
a run marked contended, and so its round, is left out (the bench measures such a run again, in a round of its own).
--with-contended keeps them: on a day when the hypervisor steals a few percent of every run, both sides of a round
were slowed alike, and the ratio is all there is to read (its rows say how many of their rounds were contended).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from fwbench.harness.table import markdown_table


def rounds(cell: dict, contended: bool = False) -> dict[int, float]:
    """Round -> that round's step ms, for the cell's successful runs that were not contended (or all of them)."""
    return {r["round"]: r["metrics"]["step_ms"] for r in cell.get("runs", [])
            if r.get("status") == "ok" and (contended or not _contended(r))}


def _contended(run: dict) -> bool:
    return bool((run.get("contention") or {}).get("contended"))


def rows(doc: dict, contended: bool = False) -> list[list[str]]:
    """One row per model with both a numpy and a torch (eager) cell."""
    by = {(c["model"], c["backend"]): c for c in doc["cells"] if c.get("status") == "ok"}
    out = []
    for model in dict.fromkeys(c["model"] for c in doc["cells"]):
        np_cell, torch_cell = by.get((model, "numpy")), by.get((model, "torch"))
        if not (np_cell and torch_cell):
            continue
        a, b = rounds(np_cell, contended), rounds(torch_cell, contended)
        ratios = sorted(a[r] / b[r] for r in a.keys() & b.keys())
        if not ratios:
            continue
        busy = {r["round"] for c in (np_cell, torch_cell) for r in c["runs"] if _contended(r)} & a.keys() & b.keys()
        m, t = np_cell["metrics"], torch_cell["metrics"]
        out.append([model, f"{m['step_gflop']:.3f}", f"{m['step_ms']:.2f}", f"{t['step_ms']:.2f}",
                    f"**{statistics.median(ratios):.2f}** [{ratios[0]:.2f}, {ratios[-1]:.2f}] ({len(ratios)}"
                    + (f", {len(busy)} contended)" if busy else ")"),
                    _percent(m.get("mfu")), _percent(t.get("mfu")),
                    f"{m['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f}"])
    return out


def _percent(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a bench results file (results/performance/bench-quick-*.json)")
    ap.add_argument("--with-contended", action="store_true", help="keep the runs marked contended")
    args = ap.parse_args()
    try:
        with open(args.results) as f:
            doc = json.load(f)
        table = rows(doc, args.with_contended)
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"numpy_vs_torch.py: cannot read {args.results} as a bench results file ({e}); "
                 "pass one that `fwbench bench` wrote")
    print(markdown_table(["spec", "GFLOP a step", "numpy ms", "torch ms", "numpy / torch (rounds)", "numpy % of peak",
                          "torch % of peak", "peak MB numpy / torch"], table))


if __name__ == "__main__":
    main()

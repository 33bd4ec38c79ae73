"""Backend against backend inside one run: each cell's step time judged against a baseline row of its group."""
from __future__ import annotations

from fwbench.harness.reporting.verdicts import Question, Verdict, judge

# The row every other row is compared with: the framework most readers know, in its default mode.
DEFAULT_BASELINE = ("torch", "torch@eager")
GROUP = ("model", "batch_size", "device", "dtype")


def runs_of(cell: dict, key: str = "step_ms") -> list[float]:
    """The per-process figures a cell's metric came from (one value when the cell had a single run)."""
    unc = (cell.get("uncertainty") or {}).get(key)
    if unc and unc.get("runs"):
        return list(unc["runs"])
    value = (cell.get("metrics") or {}).get(key)
    return [value] if isinstance(value, (int, float)) else []


def pick(cells: list[dict], baseline: str | None) -> dict | None:
    """The group's baseline cell: the one named, else torch's default mode, else the first that ran."""
    ok = [c for c in cells if c["status"] == "ok"]
    wanted = (baseline,) if baseline else DEFAULT_BASELINE
    return next((c for c in ok if c["backend"] in wanted), None if baseline else (ok[0] if ok else None))


def judged_against(results: dict, baseline: str | None = None) -> tuple[dict[int, Verdict], set[int]]:
    """Verdicts keyed by id(cell) for every non-baseline cell, Holm over the whole run, and the baseline cells' ids."""
    groups: dict[tuple, list[dict]] = {}
    for cell in results["cells"]:
        groups.setdefault(tuple(cell.get(k) for k in GROUP), []).append(cell)
    pairs, bases = [], set()
    for cells in groups.values():
        base = pick(cells, baseline)
        if base is None:
            continue
        bases.add(id(base))
        pairs += [(base, c) for c in cells if c is not base and c["status"] == "ok"]
    questions = [Question(runs_of(a), runs_of(b), blocked=_blocked(a, b)) for a, b in pairs]
    return {id(b): v for (_, b), v in zip(pairs, judge(questions))}, bases


def _blocked(a: dict, b: dict) -> str | None:
    if a.get("contended") or b.get("contended"):
        return "contended"
    return None

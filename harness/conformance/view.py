"""The conformance document as text: one row per check, then the verdict."""
from __future__ import annotations

from fwbench.harness.table import text_table


def number(value: float | None) -> str:
    """An error or bound for the table: '-' when there is none."""
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.1e}" if value != float("inf") else "inf"


def header(doc: dict) -> str:
    """Which backend, from where, on what, in which dtype."""
    dtype = doc["dtype"] + (f" ({doc['dtype_note']})" if doc.get("dtype_note") else "")
    return (f"fwbench conformance: {doc['backend']} ({doc['version']}, {doc['source']}) on {doc['device']}, "
            f"{dtype}, against the NumPy engine in float64")


def verdict(doc: dict) -> str:
    """How many rows of each status, and whether the backend conforms."""
    counts: dict[str, int] = {}
    for check in doc["checks"]:
        counts[check["status"]] = counts.get(check["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    if doc["passed"]:
        return f"conformant: {summary} ({doc['seconds']:.1f} s); notes and unsupported features do not fail"
    failed = [c["name"] for c in doc["checks"] if c["status"] == "fail"]
    return f"NOT conformant: {summary} ({doc['seconds']:.1f} s); failed: {', '.join(failed)}"


def report(doc: dict) -> str:
    """Header, the table (error = relative L2 against the reference unless the detail says otherwise), verdict."""
    errors = _right([number(c["error"]) for c in doc["checks"]])
    bounds = _right([number(c["bound"]) for c in doc["checks"]])
    rows = [[c["name"], c["status"].upper() if c["status"] == "fail" else c["status"], error, bound, detail(c)]
            for c, error, bound in zip(doc["checks"], errors, bounds)]
    table = text_table(["check", "status", "error", "bound", "detail"], rows)
    return f"{header(doc)}\n\n{table}\n\n{verdict(doc)}"


def detail(check: dict) -> str:
    """A row's detail, then its hint when it has one."""
    return f"{check['detail']}; hint: {check['hint']}" if check.get("hint") else check["detail"]


def _right(cells: list[str]) -> list[str]:
    """Cells padded to one width, so the column reads right-aligned whether or not a cell looks numeric."""
    width = max(map(len, cells), default=0)
    return [cell.rjust(width) for cell in cells]

"""`fwbench report`: Markdown, HTML, CSV and run-to-run comparisons, all read from results files."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from fwbench.harness.atomic import atomic_write, ensure_parent
from fwbench.harness.reporting.load import DEFAULT_DIR, ResultsError, find, load

__all__ = ["ResultsError", "render", "report"]

DEFAULT_HTML = DEFAULT_DIR / "report.html"
RESULTS_PEEK = 64 << 20  # bytes read to tell whether --out holds results; a results file is a few MB


def render(paths: list[str] | None, form: str = "md", baseline: str | None = None) -> str:
    """The report on the given results files (the newest in results/ when none) in md, html, csv or pytest-benchmark."""
    runs = [(path.name, load(path)) for path in find(paths)]
    if form == "html":
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--format html draws its figures with matplotlib: pip install matplotlib")
        from fwbench.harness.reporting import html  # matplotlib is imported only on this path
        return html.render(runs, baseline)
    if form == "csv":
        from fwbench.harness.reporting import csv_out
        return csv_out.render(runs)
    if form == "pytest-benchmark":
        from fwbench.harness.reporting import pytest_benchmark
        return pytest_benchmark.render(runs)
    from fwbench.harness.reporting import markdown
    return markdown.render(runs, baseline)


def report(args) -> int:
    """The `report` subcommand: the report, or the --compare table (exit 1 on a regression), to --out or stdout."""
    form = getattr(args, "format", "md") or "md"
    pair = getattr(args, "compare", None)
    out = _out(args, form, pair)  # refused before anything is read or drawn
    as_json = getattr(args, "json", False)
    if as_json and form != "md":
        raise ValueError(f"--json prints the tables as JSON, --format {form} as {form}; drop one")
    if pair:
        if getattr(args, "results", None):
            raise ValueError("give either results files or --compare A.json B.json, not both")
        if form != "md":
            raise ValueError("--compare writes Markdown only; drop --format")
        text, code = _compared(pair, getattr(args, "noise_band", None), as_json)
    elif as_json:
        from fwbench.harness.reporting import json_out
        runs = [(path.name, load(path)) for path in find(getattr(args, "results", None))]
        text, code = json_out.render(runs, getattr(args, "baseline", None)), 0
    else:
        text, code = render(getattr(args, "results", None), form, getattr(args, "baseline", None)), 0
    if out is None:
        sys.stdout.write(text)
        return code
    atomic_write(out, text.encode("utf-8"))
    print(f"wrote {out}", file=sys.stderr)
    return code


def _compared(pair: list[str], band: float | None, as_json: bool) -> tuple[str, int]:
    """B against A as Markdown or JSON, and the exit code: 1 with a regression; nothing in common is bad input."""
    from fwbench.harness.reporting import compare, compare_view, json_out
    a, b = (Path(p) for p in pair)
    ra, rb = load(a), load(b)
    found = compare.compare(ra, rb, band or compare.NOISE_BAND)
    if not found["matched"]:
        raise ResultsError(compare.nothing_in_common(a.name, ra, b.name, rb))
    text = json_out.compared(a.name, b.name, found) if as_json else compare_view.render(a.name, ra, b.name, rb, found)
    return text, 1 if found["regressions"] else 0


def _out(args, form: str, pair) -> Path | None:
    """The file to write (None: stdout), never a directory, one of the report's inputs or any results file."""
    out = getattr(args, "out", None) or (DEFAULT_HTML if form == "html" and not pair else None)
    if out is None:
        return None
    out = ensure_parent(Path(out))
    if not out.exists():
        return out
    inputs = [Path(p) for p in pair] if pair else find(getattr(args, "results", None))
    if any(p.exists() and os.path.samefile(p, out) for p in inputs):
        raise ValueError(f"--out {out} is one of this report's results files; give another file name")
    if _is_results(out):
        raise ValueError(f"--out {out} is a fwbench results file; give another file name")
    return out


def _is_results(path: Path) -> bool:
    """Whether path holds a fwbench.results/* document, whatever its name."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(RESULTS_PEEK)
    try:
        return str(json.loads(head).get("schema")).startswith("fwbench.results/")
    except (ValueError, AttributeError):  # cut off at the peek, or not an object: fwbench writes the schema first
        return re.search(rb'"schema"\s*:\s*"fwbench\.results/', head[:4096]) is not None

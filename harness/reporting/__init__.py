"""`fwbench report`: Markdown, HTML, CSV and run-to-run comparisons, all read from results files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness.reporting.load import DEFAULT_DIR, ResultsError, find, load

__all__ = ["ResultsError", "render", "report"]

DEFAULT_HTML = DEFAULT_DIR / "report.html"


def render(paths: list[str] | None, form: str = "md", baseline: str | None = None) -> str:
    """The report on the given results files (the newest in results/ when none) in md, html, csv or pytest-benchmark."""
    runs = [(path.name, load(path)) for path in find(paths)]
    if form == "html":
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--format html draws its figures with matplotlib: pip install matplotlib")
        from harness.reporting import html  # matplotlib is imported only on this path
        return html.render(runs, baseline)
    if form == "csv":
        from harness.reporting import csv_out
        return csv_out.render(runs)
    if form == "pytest-benchmark":
        from harness.reporting import pytest_benchmark
        return pytest_benchmark.render(runs)
    from harness.reporting import markdown
    return markdown.render(runs, baseline)


def report(args) -> int:
    """The `report` subcommand: the report, or the --compare table (exit 1 on a regression), to --out or stdout."""
    form = getattr(args, "format", "md") or "md"
    pair = getattr(args, "compare", None)
    if pair:
        if getattr(args, "results", None):
            raise ValueError("give either results files or --compare A.json B.json, not both")
        if form != "md":
            raise ValueError("--compare writes Markdown only; drop --format")
        from harness.reporting import compare, compare_view
        a, b = (Path(p) for p in pair)
        ra, rb = load(a), load(b)
        found = compare.compare(ra, rb, getattr(args, "noise_band", None) or compare.NOISE_BAND)
        text = compare_view.render(a.name, ra, b.name, rb, found)
        code = 1 if found["regressions"] else 0
    else:
        text, code = render(getattr(args, "results", None), form, getattr(args, "baseline", None)), 0
    out = getattr(args, "out", None) or (DEFAULT_HTML if form == "html" and not pair else None)
    if out is None:
        sys.stdout.write(text)
        return code
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return code

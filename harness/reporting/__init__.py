"""`fwbench report`: Markdown, HTML, CSV and run-to-run comparisons, all read from results files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness.reporting.load import DEFAULT_DIR, ResultsError, find, load

__all__ = ["ResultsError", "render", "report"]

DEFAULT_HTML = DEFAULT_DIR / "report.html"


def render(paths: list[str] | None, form: str = "md") -> str:
    """The report on the given results files (the newest in results/ when none) in md, html or csv."""
    runs = [(path.name, load(path)) for path in find(paths)]
    if form == "html":
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--format html draws its figures with matplotlib: pip install matplotlib")
        from harness.reporting import html  # matplotlib is imported only on this path
        return html.render(runs)
    if form == "csv":
        from harness.reporting import csv_out
        return csv_out.render(runs)
    from harness.reporting import markdown
    return markdown.render(runs)


def report(args) -> int:
    """The `report` subcommand: write the report (or the --compare table) to --out or stdout."""
    form = getattr(args, "format", "md") or "md"
    pair = getattr(args, "compare", None)
    if pair:
        if getattr(args, "results", None):
            raise ValueError("give either results files or --compare A.json B.json, not both")
        if form != "md":
            raise ValueError("--compare writes Markdown only; drop --format")
        from harness.reporting import compare
        a, b = (Path(p) for p in pair)
        text = compare.render(a.name, load(a), b.name, load(b), getattr(args, "threshold", 0.10))
    else:
        text = render(getattr(args, "results", None), form)
    out = getattr(args, "out", None) or (DEFAULT_HTML if form == "html" and not pair else None)
    if out is None:
        sys.stdout.write(text)
        return 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0

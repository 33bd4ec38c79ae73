"""The `fwbench report` arguments, added to whatever parser the command line gives."""
from __future__ import annotations

import argparse

FORMATS = ("md", "html", "csv", "pytest-benchmark")


def _band(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1 (0.10 = 10%), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """results..., --format, --out, --compare A B, --noise-band, --json, --baseline."""
    parser.add_argument("results", nargs="*",
                        help="results files or directories of bench-*.json; default: the newest in results/")
    parser.add_argument("--format", choices=FORMATS, default="md",
                        help="md (default), html, csv, or pytest-benchmark (JSON for `pytest-benchmark compare`)")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write; default: stdout for md and csv, results/report.html for html")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                        help="ratios B/A with intervals and verdicts for matching cells (Markdown); exit 0 with no "
                             "regression, 1 with at least one, 2 on bad input")
    parser.add_argument("--noise-band", type=_band,
                        help="the smallest change --compare calls faster or slower (default: the band measured on "
                             "the reference machine, 0.10)")
    parser.add_argument("--json", action="store_true",
                        help="the model tables (or the --compare) as JSON: values, intervals, verdicts; same exit "
                             "codes")
    parser.add_argument("--baseline", metavar="NAME[@MODE]",
                        help="the row each table's verdicts compare with (default: torch in its default mode)")


"""The `fwbench report` arguments, added to whatever parser the command line gives."""
from __future__ import annotations

import argparse

FORMATS = ("md", "html", "csv")


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1 (0.10 = 10%), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """results..., --format, --out, --compare A B, --threshold."""
    parser.add_argument("results", nargs="*",
                        help="results files or directories of bench-*.json; default: the newest in results/")
    parser.add_argument("--format", choices=FORMATS, default="md", help="md (default), html or csv")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write; default: stdout for md and csv, results/report.html for html")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                        help="per-metric ratios B/A for matching cells, regressions flagged (Markdown)")
    parser.add_argument("--threshold", type=_threshold, default=0.10,
                        help="relative change that counts as a regression in --compare (default 0.10)")

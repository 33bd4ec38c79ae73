"""`fwbench conventions`: measure each framework's conventions and print the table, or the JSON document."""
from __future__ import annotations

import argparse
import json

from fwbench.harness.conventions.document import collect, errors
from fwbench.harness.conventions.view import markdown


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `conventions` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("conventions", help="measure framework conventions (batch norm, pooling, padding, "
                                                  "Adam, SGD, init, dropout) and their drift from fwbench's")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON document")
    return p


def run(args) -> int:
    """0, or 1 when a probe failed on some framework (its cells say why)."""
    doc = collect()
    print(json.dumps(doc) if args.json else markdown(doc))
    return 1 if errors(doc) else 0

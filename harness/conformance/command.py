"""`fwbench conformance NAME`: run the battery and print the table, or the JSON document."""
from __future__ import annotations

import argparse
import json

from fwbench.harness import options as opt
from fwbench.harness.conformance import view
from fwbench.harness.conformance.runner import run_conformance


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backend", metavar="NAME", help="a registered backend (built-in or plugin) or module.path:ClassName")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where the backend runs; the reference always runs on the CPU (auto: cuda when listed)")
    p.add_argument("--dtype", choices=("auto", "float64", "float32"), default="auto",
                   help="auto: float64, or float32 with its bounds when the backend refuses float64")
    opt.add_workers(p)
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON document")


def conformance(args) -> int:
    """0 when no check fails (unsupported features and tie notes do not), 1 otherwise."""
    doc = run_conformance(args.backend, args.device, args.dtype)
    print(json.dumps(doc) if args.json else view.report(doc))
    return 0 if doc["passed"] else 1

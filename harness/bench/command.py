"""`fwbench bench`: turn the options into a suite, check them up front, and run it."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import backends
import models
from backends.base import BackendError
from harness.bench.runner import run_suite
from harness.bench.suite import PRESETS
from harness.session import MNIST_SHAPE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=tuple(PRESETS), default="default",
                   help="quick: about a minute; default: what make bench runs; full: more sizes, repeats, every "
                        "mode; gpu: the cuda suite of benchmarks/gpu_bench.sh")
    p.add_argument("--backends", help="comma-separated, NAME or NAME@MODE, e.g. numpy,torch,torch@compile,flax@scan; "
                                      "default: the suite's")
    p.add_argument("--models", help="comma-separated shipped names or .toml paths; default: cnn,mlp")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: the suite's")
    p.add_argument("--batch-sizes", help="comma-separated, e.g. 64,512; default: the suite's")
    p.add_argument("--repeat", type=int, help="runs per cell, each a fresh process, in interleaved rounds (at least 3 "
                                              "give an interval, 5 or more a verdict); default: the suite's")
    p.add_argument("--order-seed", type=int, help="seed of the order in which each round visits the cells")
    p.add_argument("--no-conformance", action="store_true",
                   help="skip the conformance kit for built-in backends (plugins are always checked)")
    p.add_argument("--out", default="results", help="directory for the results file (default results/)")
    p.add_argument("--allow-nonconformant", action="store_true",
                   help="bench a plugin backend even if it fails fwbench conformance (its rows are marked)")


def _list(text: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def suite_from(args):
    """The preset with the user's overrides, every name checked before anything runs."""
    suite = PRESETS[args.suite]
    names, model_names = _list(args.backends), _list(args.models)
    for name in names or ():
        base, mode = backends.split(name)
        if base not in backends.names() and ":" not in base:
            raise BackendError(f"unknown backend '{base}'; choose from {', '.join(backends.names())}, "
                               "or give module.path:ClassName")
        if mode and not backends.missing(base):
            backends.load(name)  # imports the framework here, so a mistyped mode fails before any cell runs
    for name in model_names or ():
        spec = models.get(name)
        if spec.input != MNIST_SHAPE:
            raise models.SpecError(f"model '{name}' takes input {list(spec.input)}; the suite trains on MNIST "
                                   f"{list(MNIST_SHAPE)}")
    sizes = _list(args.batch_sizes)
    try:
        sizes = tuple(int(s) for s in sizes) if sizes else None
    except ValueError:
        raise ValueError(f"--batch-sizes takes whole numbers such as 64,512, got '{args.batch_sizes}'") from None
    if sizes and min(sizes) < 1 or args.repeat is not None and args.repeat < 1:
        raise ValueError("--batch-sizes and --repeat must be positive")
    if names and (args.device or suite.device) == "cuda":
        _check_cuda(names)  # a preset's own backends each record in their cell why they cannot run
    overrides = {"backends": names, "models": model_names, "device": args.device, "batch_sizes": sizes,
                 "repeat": args.repeat, "allow_nonconformant": args.allow_nonconformant or None,
                 "order_seed": getattr(args, "order_seed", None),
                 "conformance": False if getattr(args, "no_conformance", False) else None}
    return replace(suite, **{k: v for k, v in overrides.items() if v is not None})


def _check_cuda(names) -> None:
    """Refuse --device cuda up front for a named, installed backend that sees no GPU here."""
    # Asked in a fresh process, as the cells are: probing a GPU here would hold its runtime (and JAX's
    # preallocated memory) in this process for the whole run.
    proc = subprocess.run([sys.executable, "-m", "harness", "backends", "--json"], capture_output=True, text=True)
    try:
        seen = {row["name"]: row for row in json.loads(proc.stdout.strip().splitlines()[-1])}
    except (IndexError, json.JSONDecodeError):
        return  # no answer: each cell will say for itself why it cannot run
    for base in dict.fromkeys(backends.split(n)[0] for n in names):
        row = seen.get(base)
        if row and row["status"] == "ok" and "cuda" not in row["devices"]:
            raise BackendError(f"--device cuda: backend '{base}' cannot use a GPU here (it sees: "
                               f"{', '.join(row['devices'])}); use --device auto, or leave it out of --backends")


def bench(args) -> int:
    suite = suite_from(args)
    path = run_suite(suite, Path(args.out))
    print(f"wrote {path}; make the tables with: fwbench report {path}")
    return 0

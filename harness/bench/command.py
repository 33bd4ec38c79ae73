"""`fwbench bench`: turn the options into a suite, check them up front, and run it."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

from fwbench import backends
from fwbench import models
from fwbench.backends.base import BackendError
from fwbench.harness.bench import checks
from fwbench.harness.bench.runner import run_suite
from fwbench.harness import options as opt
from fwbench.harness.bench.dispatch import EXECUTORS, Dispatch
from fwbench.harness.bench.suite import PRESETS, recipe_of
from fwbench.harness.data import COUNTS
from fwbench.harness.session import MNIST_CLASSES, MNIST_SHAPE, check_classes, check_memory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=tuple(PRESETS), default="default",
                   help="quick: about a minute; default: what make bench runs; full: more sizes, repeats, every "
                        "mode; zoo: pyex, flaxex, lenet5 and tgmnist to their targets (52 min here); gpu: the "
                        "cuda suite of benchmarks/gpu_bench.sh")
    p.add_argument("--backends", type=opt.names("numpy,torch"),
                   help="comma-separated, NAME or NAME@MODE, e.g. numpy,torch,torch@compile,flax@scan; "
                        "default: the suite's")
    p.add_argument("--models", type=opt.names("cnn,mlp"),
                   help="comma-separated shipped names or .toml paths; default: cnn,mlp")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="default: the suite's")
    p.add_argument("--batch-sizes", type=opt.sizes, help="comma-separated, e.g. 64,512; default: the suite's")
    p.add_argument("--repeat", type=opt.positive,
                   help="runs per cell, each a fresh process, in interleaved rounds (at least 3 give an interval, "
                        "5 or more a verdict); default: the suite's")
    p.add_argument("--order-seed", type=opt.seed, help="seed of the order in which each round visits the cells")
    p.add_argument("--no-conformance", action="store_true",
                   help="skip the conformance kit for built-in backends (plugins are always checked)")
    p.add_argument("--out", default="results", help="directory for the results file (default results/)")
    p.add_argument("--allow-nonconformant", action="store_true",
                   help="bench a plugin backend even if it fails fwbench conformance (its rows are marked)")
    opt.add_workers(p)
    p.add_argument("--executor", choices=EXECUTORS, default="process",
                   help="where each run executes: a fresh child process here (default), or a submitit job (submitit's "
                        "local executor, or one Slurm job per run where Slurm is); runs are sent one at a time")
    p.add_argument("--cluster", choices=("local", "slurm"), help="submitit: default Slurm where it is, else local")
    p.add_argument("--slurm-partition", help="submitit on Slurm: the partition for every job")
    p.add_argument("--gpus-per-cell", type=opt.count, default=0, help="submitit: GPUs each job asks for")
    p.add_argument("--exclusive", action="store_true", help="submitit on Slurm: each job gets a node to itself")
    p.add_argument("--jobs-folder", help="submitit: its pickles and logs (default: submitit/ beside the results)")
    p.add_argument("--json", action="store_true",
                   help="print the results file's path, the run's status and what failed as one JSON line, last")


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
    # Importing the frameworks here makes a mistyped mode fail before any cell runs; only the first process
    # group's, as a framework set up per process (keras@jax) cannot join them, and its cells run apart anyway.
    for name in backends.processes(list(names or ()))[0]:
        if backends.split(name)[1] and not backends.missing(name):
            backends.load(name)
    if (args.device or suite.device) == "cuda":
        where = "--device cuda:" if args.device else f"--suite {suite.name} runs on cuda, but"
        _check_cuda(names or suite.backends, bool(names), where)
    overrides = {"backends": names, "models": model_names, "device": args.device, "batch_sizes": args.batch_sizes,
                 "repeat": args.repeat, "allow_nonconformant": args.allow_nonconformant or None,
                 "order_seed": getattr(args, "order_seed", None), "workers": getattr(args, "workers", None),
                 "conformance": False if getattr(args, "no_conformance", False) else None}
    suite = replace(suite, **{k: v for k, v in overrides.items() if v is not None}, dispatch=dispatch_from(args))
    for name in suite.models:
        _check_fits(name, suite)
    return suite


def dispatch_from(args) -> Dispatch:
    """The executor options, checked: submitit's only with --executor submitit, and submitit installed for it."""
    executor = getattr(args, "executor", "process")
    cluster_options = [f"--{k.replace('_', '-')}" for k in ("cluster", "slurm_partition", "gpus_per_cell",
                                                          "exclusive", "jobs_folder") if getattr(args, k, None)]
    if executor == "process":
        if cluster_options:
            raise BackendError(f"{', '.join(cluster_options)} only apply to --executor submitit")
        return Dispatch()
    if importlib.util.find_spec("submitit") is None:
        raise BackendError("--executor submitit needs submitit, which is not installed; install it with: "
                           "pip install 'fwbench[cluster]'")
    return Dispatch("submitit", args.cluster, args.slurm_partition, args.gpus_per_cell, args.exclusive,
                    args.jobs_folder)


def _check_fits(name: str, suite) -> None:
    """MNIST's input and classes, and this machine's memory, checked here so that no cell fails on them."""
    spec, recipe = models.get(name), recipe_of(name, suite)
    if spec.input != MNIST_SHAPE:
        raise models.SpecError(f"model '{name}' takes input {list(spec.input)}; the suite trains on MNIST "
                               f"{list(MNIST_SHAPE)}")
    check_classes(spec, MNIST_CLASSES)
    batch = max((*suite.batch_sizes, recipe.batch_size) if suite.train else suite.batch_sizes)
    batch = min(batch, suite.limit or COUNTS["train"])  # no batch is larger than the training set
    check_memory(spec, batch, "float32", recipe.optimizer, suite.device)


def devices_seen(names) -> dict[str, dict] | None:
    """`fwbench backends NAME... --json`, row by name; None when it gave no answer (each cell then says why)."""
    # Asked in a fresh process, as the cells are: probing a GPU here would hold its runtime (and JAX's
    # preallocated memory) in this process for the whole run. Only the suite's backends: each one probed
    # imports its framework.
    rows, why = checks.fwbench("backends", [*names, "--json"], expect=list)
    if rows is None:
        print(f"fwbench bench: warning: could not check for a GPU up front ({why})", file=sys.stderr)
        return None
    return {row["name"]: row for row in rows if isinstance(row, dict) and "name" in row}


def _check_cuda(names, named: bool, where: str) -> None:
    """Refuse cuda up front where no backend of the suite sees a GPU here, or a named one does not."""
    bases = list(dict.fromkeys(backends.split(n)[0] for n in names))
    seen = devices_seen(bases)
    if seen is None:
        return
    rows = [seen[base] for base in bases if base in seen]
    for row in rows if named else ():
        if row["status"] == "ok" and "cuda" not in row["devices"]:
            raise BackendError(f"--device cuda: backend '{row['name']}' cannot use a GPU here (it sees: "
                               f"{', '.join(row['devices'])}); use --device auto, or leave it out of --backends")
    # One that sees a GPU is enough: the others record in their cells why they cannot run.
    if rows and not any(row["status"] == "ok" and "cuda" in row["devices"] for row in rows):
        what = "; ".join(f"{row['name']}: {_devices(row)}" for row in rows)
        raise BackendError(f"{where} no backend here sees a GPU ({what}); run it on a machine with a GPU, "
                           "or pass --device cpu")


def _devices(row: dict) -> str:
    if row["status"] == "ok":
        return ", ".join(row["devices"]) or "none"
    return "not installed" if row["status"].startswith("missing") else "broken"


def bench(args) -> int:
    """Run the suite; 1 when a cell or a check failed (after every result is written), 130 when interrupted."""
    suite = suite_from(args)
    try:
        path = run_suite(suite, Path(args.out))
    except KeyboardInterrupt as e:
        if args.json and getattr(e, "path", None):
            print(json.dumps(outcome(e.path)))
        raise
    print(f"wrote {path}; make the tables with: fwbench report {path}")
    found = outcome(path)
    for line in failure_lines(found):
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(found))
    return 1 if found["failed"] or found["failed_checks"] else 0


def outcome(path: Path) -> dict:
    """The run's path, status, failed cells and the checks that could not run, from its results file."""
    doc = json.loads(path.read_text())
    failed = [{"cell": f"{c['backend']} {c['model']} b{c['batch_size']} {c['device']}", "error": c["error"]}
              for c in doc["cells"] if c["status"] == "error"]
    checks_ = [{"check": f"{kind} {name}", "error": found["error"]}
               for kind in ("conformance", "agreement") for name, found in doc[kind].items() if found.get("error")]
    return {"path": str(path), "status": doc["status"], "cells": len(doc["cells"]), "failed": failed,
            "failed_checks": checks_}


def failure_lines(found: dict) -> list[str]:
    """What failed, one line each, under a heading."""
    lines = [f"  {f['cell']}: {f['error']}" for f in found["failed"]]
    if lines:
        lines.insert(0, f"fwbench bench: {len(found['failed'])} of {found['cells']} cells failed, exit 1; "
                        f"every result is in {found['path']}")
    return lines + [f"fwbench bench: {c['check']} could not run: {c['error']}" for c in found["failed_checks"]]

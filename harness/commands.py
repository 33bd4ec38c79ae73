"""One function per `fwbench` subcommand; each returns the exit code."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fwbench import backends
from fwbench import models
from fwbench.backends.base import BackendError
from fwbench.harness import atomic, info, summary
from fwbench.harness.probes import contention
from fwbench.harness.agreement.command import agree
from fwbench.harness.bench.command import bench
from fwbench.harness.conformance.command import conformance
from fwbench.harness.conventions.command import run as conventions
from fwbench.harness.reporting import report
from fwbench.harness.scaffold import new_backend
from fwbench.harness.recipe import recipe_for
from fwbench.harness.data import COUNTS
from fwbench.harness.session import check_memory, make_backend, mnist_for
from fwbench.harness.train import TrainingDiverged
from fwbench.harness.train import train as run_training


def models_(args) -> int:
    if args.model:
        spec = models.get(args.model)
        print(json.dumps(info.model_doc(spec)) if args.json else info.model_table(spec))
        recipe = recipe_for(spec.name)
        check_memory(spec, recipe.batch_size, "float32", recipe.optimizer, "cpu")  # shown above; refused here
    else:
        names = models.shipped()
        print(json.dumps(info.models_docs(names)) if args.json else info.models_summary(names))
    return 0


def backends_(args) -> int:
    rows = info.backend_rows(args.names)
    print(json.dumps(rows) if args.json else info.backends_table(rows))
    return 0


def _recipe(args, spec):
    """The recipe with the user's options, refused here if training it cannot fit in memory."""
    recipe = recipe_for(spec.name, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                        lr=args.lr, momentum=args.momentum, schedule=args.schedule, shift=args.shift)
    # A batch is never larger than the training set: --limit, or MNIST's 60,000.
    batch = min(recipe.batch_size, args.limit or COUNTS["train"])
    check_memory(spec, batch, args.dtype, recipe.optimizer, args.device)
    return recipe


def _train_one(name: str, spec, data, recipe, args) -> dict:
    """Train one backend and return its self-describing summary; BackendError naming it if its code fails."""
    # Divergence is the training loop's finding, not the backend's fault, so it keeps its own exit code.
    with backends.blame(name, "in training", keep=(TrainingDiverged,)):
        return _train(name, spec, data, recipe, args)


def _train(name: str, spec, data, recipe, args) -> dict:
    backend = make_backend(name, spec, device=args.device, dtype=args.dtype, seed=args.seed, init=args.init)
    if not args.json:
        print(f"{name} ({type(backend).version()}) on {backend.device}: {spec.name}, "
              f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer.name} lr {recipe.optimizer.lr}, "
              f"{recipe.schedule} schedule, shift {recipe.shift}")

    def on_epoch(log):
        if not args.json:
            print(f"  epoch {log.epoch}: train loss {log.train_loss:.4f}  test accuracy "
                  f"{100 * log.test_accuracy:.2f}%  epoch time {log.epoch_seconds:.1f}s", flush=True)

    before = contention.snapshot()
    result = run_training(backend, recipe, data.train_x, data.train_y, data.test_x, data.test_y,
                          seed=args.seed, progress=not args.no_progress, on_epoch=on_epoch)
    return summary.summary(name, type(backend).version(), backend.device, spec, recipe, args, data, result,
                           contention.between(before, contention.snapshot()))


def train(args) -> int:
    spec = models.get(args.model)
    backends.load(args.backend)  # fail on a missing framework before loading data
    data = mnist_for(spec, args.dtype, args.data_dir, args.limit)
    summary = _train_one(args.backend, spec, data, _recipe(args, spec), args)
    if args.json:
        print(json.dumps(summary))
    return 0


def compare(args) -> int:
    spec = models.get(args.model)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    for name in names:
        backends.load(name)
    atomic.ensure_dir(Path(args.out))  # a bad --out is said now, not after the training
    data = mnist_for(spec, args.dtype, args.data_dir, args.limit)
    recipe = _recipe(args, spec)
    runs, failed = [], {}
    config = {"backends": names, "model": spec.name, "device": args.device, "dtype": args.dtype, "seed": args.seed,
              "init": args.init, "limit": args.limit}
    try:
        for name in names:  # one backend's failure is recorded in its cell and costs the others nothing
            try:
                runs.append(_train_one(name, spec, data, recipe, args))
            except (BackendError, TrainingDiverged) as e:
                failed[name] = str(e)
                runs.append(summary.failed(name, spec, recipe, args, data, str(e)))
                if not args.json:
                    print(f"{name}: failed: {e}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the backends that finished are kept, marked interrupted
        if runs:
            path, _ = summary.write_or_keep(summary.comparison(runs, config, "interrupted"), Path(args.out),
                                            f"compare-{spec.name}")
            print(f"fwbench compare: {len(runs)} finished backend(s) kept in {path}", file=sys.stderr)
        raise
    doc = summary.comparison(runs, config)
    path, moved = summary.write_or_keep(doc, Path(args.out), f"compare-{spec.name}")
    table = summary.markdown(doc)
    atomic.atomic_write(path.with_suffix(".md"), (table + "\n").encode())
    print(json.dumps(doc) if args.json else f"\n{table}\n\nwrote {path} and {path.with_suffix('.md')}")
    if moved:
        raise atomic.ResultsMoved(moved)
    return _failures(failed, path)


def _failures(failed: dict[str, str], path: Path) -> int:
    """Exit 0, or 1 (a finding) with one line naming every backend that failed and where the others' results are."""
    if not failed:
        return 0
    why = "; ".join(m if f"'{n}'" in m else f"backend '{n}': {m}" for n, m in failed.items())
    print(f"fwbench compare: {why}; every result, these marked failed, is in {path}", file=sys.stderr)
    return 1


# Trailing underscores keep `models` and `backends` free for the packages.
COMMANDS = {"models": models_, "backends": backends_, "train": train, "compare": compare, "agree": agree,
            "bench": bench, "report": report, "conformance": conformance, "new-backend": new_backend,
            "conventions": conventions}

"""One function per `fwbench` subcommand; each returns the exit code."""
from __future__ import annotations

import json
from pathlib import Path

import backends
import models
from harness import info, summary
from harness.probes import contention
from harness.agree_cmd import agree
from harness.bench.command import bench
from harness.conformance.command import conformance
from harness.reporting import report
from harness.scaffold import new_backend
from harness.recipe import recipe_for
from harness.session import make_backend, mnist_for
from harness.train import train as run_training


def models_(args) -> int:
    if args.model:
        print(info.model_table(models.get(args.model)))
    else:
        print(info.models_summary(models.shipped()))
    return 0


def backends_(args) -> int:
    rows = info.backend_rows()
    print(json.dumps(rows) if args.json else info.backends_table(rows))
    return 0


def _recipe(args, spec):
    return recipe_for(spec.name, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                      lr=args.lr, momentum=args.momentum, schedule=args.schedule, shift=args.shift)


def _train_one(name: str, spec, data, recipe, args) -> dict:
    """Train one backend and return its self-describing summary."""
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
    data = mnist_for(spec, args.dtype, args.data_dir, args.limit)
    recipe = _recipe(args, spec)
    runs = [_train_one(name, spec, data, recipe, args) for name in names]
    doc = summary.comparison(runs, {"backends": names, "model": spec.name, "device": args.device, "dtype": args.dtype,
                                    "seed": args.seed, "init": args.init, "limit": args.limit})
    path = summary.write(doc, Path(args.out), f"compare-{spec.name}")
    table = summary.markdown(doc)
    path.with_suffix(".md").write_text(table + "\n")
    print(json.dumps(doc) if args.json else f"\n{table}\n\nwrote {path} and {path.with_suffix('.md')}")
    return 0


# Trailing underscores keep `models` and `backends` free for the packages.
COMMANDS = {"models": models_, "backends": backends_, "train": train, "compare": compare, "agree": agree,
            "bench": bench, "report": report, "conformance": conformance, "new-backend": new_backend}

"""`fwbench compare`: self-describing training summaries, written atomically, and their Markdown table."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from statistics import median

from harness.atomic import atomic_write_json
from harness.provenance import git_commit, machine
from harness.table import markdown_table

SCHEMA = "fwbench.compare/1"


def summary(name, version, device, spec, recipe, args, data, result) -> dict:
    """One backend's training run as plain JSON-able data."""
    return {
        "backend": name, "framework_version": version, "device": device,
        "test_accuracy": result.test_accuracy,
        "epoch_seconds": [e.epoch_seconds for e in result.epochs],
        "epochs": [dataclasses.asdict(e) for e in result.epochs],
        "config": {
            "model": spec.name, "parameters": spec.param_count(), "seed": args.seed, "dtype": args.dtype,
            "init": args.init, "data": data.source, "train_images": len(data.train_x),
            "test_images": len(data.test_x), "recipe": dataclasses.asdict(recipe),
        },
    }


def comparison(runs: list[dict]) -> dict:
    """Several runs of one model with the context needed to read them later."""
    return {"schema": SCHEMA, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(), "git": git_commit(), "runs": runs}


def write(doc: dict, directory: Path, stem: str) -> Path:
    """Write JSON atomically as directory/stem-TIMESTAMP.json and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_json(path, doc)
    return path


def markdown(doc: dict) -> str:
    """The comparison table: a row per backend, derived only from the results document."""
    rows = []
    for run in doc["runs"]:
        first, *rest = run["epoch_seconds"]
        rows.append([run["backend"], run["framework_version"], run["device"], f"{100 * run['test_accuracy']:.2f}%",
                     f"{first:.1f}", f"{median(rest):.1f}" if rest else "-", str(1 + len(rest))])
    model = doc["runs"][0]["config"]["model"] if doc["runs"] else "?"
    head = f"### {model} on {doc['machine']['cpu']} ({doc['machine']['cores']} cores)\n\n"
    # The first epoch carries compilation and warm-up, so it is shown apart from the median of the rest.
    headers = ["backend", "version", "device", "test accuracy", "first epoch s", "median epoch s (rest)", "epochs"]
    return head + markdown_table(headers, rows)

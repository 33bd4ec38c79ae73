"""`fwbench compare`: its training runs as a fwbench.results/2 document (one cell and one run per backend)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from fwbench.harness import atomic
from fwbench.harness.bench import results
from fwbench.harness.table import markdown_table

SUITE = "compare"


def summary(name, version, device, spec, recipe, args, data, result, around: dict | None = None) -> dict:
    """One backend's training run as a results cell with a single trained run."""
    seconds = [e.epoch_seconds for e in result.epochs]
    metrics = {"epoch_s": sorted(seconds[1:])[len(seconds[1:]) // 2] if len(seconds) > 1 else None,
               "first_epoch_s": seconds[0] if seconds else None, "epoch_s_each": seconds,
               "test_accuracy": result.test_accuracy, "time_to_accuracy_s": result.time_to_accuracy}
    cell = {**_identity(name, device, spec, recipe, args, data), "framework_version": version,
            "curves": {"loss": result.loss_curve, "accuracy": result.accuracy_curve},
            # Every backend trains in this one process, so no run has a memory figure of its own.
            "runs": [{"round": 0, "trained": True, "status": "ok", "error": None, "metrics": metrics,
                      "epochs": [dataclasses.asdict(e) for e in result.epochs],
                      "contention": around or {"contended": False, "recorded": False}}]}
    results.summarize(cell)
    return cell


def failed(name, spec, recipe, args, data, error: str) -> dict:
    """A backend that failed to build or train, as a cell in error with its one-line reason."""
    cell = {**_identity(name, args.device, spec, recipe, args, data),
            "runs": [{"round": 0, "trained": True, "status": "error", "error": error, "metrics": {},
                      "contention": {"contended": False, "recorded": False}}]}
    results.summarize(cell)
    return cell


def _identity(name, device, spec, recipe, args, data) -> dict:
    return {"backend": name, "model": spec.name, "batch_size": recipe.batch_size, "device": device,
            "dtype": args.dtype, "seed": args.seed, "init": args.init, "train": True,
            "recipe": dataclasses.asdict(recipe), "parameters": spec.param_count(), "data": data.source,
            "train_images": len(data.train_x), "test_images": len(data.test_x)}


def comparison(cells: list[dict], config: dict, status: str = "complete") -> dict:
    """Several backends' runs of one model, with the provenance needed to read them later."""
    doc = results.new(SUITE, config)
    doc["cells"] = cells
    doc["frameworks"] = {c["backend"].partition("@")[0]: c["framework_version"] for c in cells if c["status"] == "ok"}
    results.finish(doc, status)
    return doc


def write(doc: dict, directory: Path, stem: str) -> Path:
    """doc in a new file directory/stem-TIMESTAMP.json (-2, -3... when a run of the same second has it); its path."""
    return atomic.claim(directory, atomic.stamped(stem), atomic.encode_json(doc))


def write_or_keep(doc: dict, directory: Path, stem: str) -> tuple[Path, str | None]:
    """write(), or when directory cannot be written, the same file under the state dir and the one-line reason."""
    try:
        return write(doc, directory, stem), None
    except (OSError, ValueError) as e:
        path = atomic.keep_elsewhere(atomic.stamped(stem), atomic.encode_json(doc))
        why = f"{directory} could not be written ({atomic.why(directory / stem, e)})" if isinstance(e, OSError) else e
        return path, f"{why}; the results are in {path}"


def markdown(doc: dict) -> str:
    """The comparison table: a row per backend, derived only from the results document."""
    rows = []
    for cell in doc["cells"]:
        if cell["status"] != "ok":
            rows.append([cell["backend"], "-", cell["device"], f"failed: {cell['error']}", "-", "-", "0"])
            continue
        m = cell["metrics"]
        rest = m["epoch_s_each"][1:]
        rows.append([cell["backend"], cell["framework_version"], cell["device"], f"{100 * m['test_accuracy']:.2f}%",
                     f"{m['first_epoch_s']:.1f}", f"{m['epoch_s']:.1f}" if rest else "-", str(1 + len(rest)) +
                     (" (contended)" if cell.get("contended") else "")])
    model = doc["cells"][0]["model"] if doc["cells"] else "?"
    head = f"### {model} on {doc['machine']['cpu']} ({doc['machine']['cores']} cores)\n\n"
    # The first epoch carries compilation and warm-up, so it is shown apart from the median of the rest.
    headers = ["backend", "version", "device", "test accuracy", "first epoch s", "median epoch s (rest)", "epochs"]
    return head + markdown_table(headers, rows)

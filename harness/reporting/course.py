"""The course's results table, its published rows beside ours, in its own columns."""
from __future__ import annotations

from fwbench.harness import fmt
from fwbench.harness.reporting.tables import Row, Table, backend_label, param_count

HEADERS = ["Model", "Parameters", "Data", "Time", "Accuracy"]
MARK = "course (published)"

# As printed in the course; "—" where it gives no figure.
PUBLISHED = [
    ["PyTorch MLP 784-128-64-10", "109K", "MNIST", "—", "97.0%"],
    ["PyTorch CNN", "—", "MNIST", "~30 s per epoch (CPU)", "98.5%"],
    ["Naive NumPy convolution loops", "—", "MNIST", "~15 min per epoch", "—"],
]


def _images(n) -> str:
    return "?" if n is None else (f"{n / 1000:g}k" if n >= 1000 else str(n))


def our_rows(results: dict) -> list[Row]:
    """One row per backend and model that measured accuracy (the recipe's batch size), first repeat only."""
    rows, seen = [], set()
    for cell in results["cells"]:
        m = cell.get("metrics") or {}
        key = (cell["backend"], cell["model"], cell.get("device"), cell.get("dtype"))
        if cell["status"] != "ok" or m.get("test_accuracy") is None or key in seen:
            continue
        seen.add(key)
        config = cell
        where = "CPU" if cell.get("device", "cpu") == "cpu" else "GPU"
        time = f"{fmt.seconds(m['epoch_s'], 1)} s per epoch ({where})" if m.get("epoch_s") is not None else fmt.DASH
        name = f"fwbench {backend_label(cell)} {cell['model']}" + ("" if where == "CPU" else f" ({cell['device']})")
        rows.append(Row([name, fmt.thousands(param_count(results, cell["model"])),
                         f"MNIST {_images(config.get('train_images'))}/{_images(config.get('test_images'))}",
                         time, fmt.percent(m["test_accuracy"])]))
    return rows


def course_table(results: dict) -> Table:
    """The published rows, marked, then ours."""
    published = [Row([f"{r[0]} — {MARK}", *r[1:]]) for r in PUBLISHED]
    return Table("Course table", HEADERS, published + our_rows(results), right=False, note=
                 "Rows marked course (published) are the course's own figures, not measured here; "
                 "ours are this run's median epoch time and final test accuracy.")

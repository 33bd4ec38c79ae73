"""Format-neutral tables built from one results dict; markdown.py and html.py only render them."""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.reporting import fmt
from harness.reporting.columns import COLUMNS, HIGH

EPOCH_NOTE = ("Epoch time is the median training time of the epochs after the first, with the data already in "
              "memory (or on the device); it excludes evaluation. Step ms is per step; a fused mode (flax scan) "
              "is timed over whole calls of many steps. Compile s is what the first call on a fresh model took "
              "beyond an ordinary one. Time to accuracy counts all training time, compilation included. Bold marks the "
              "best value in each column among rows of the same batch size "
              "(lowest time, memory and gradient difference; highest images/s and accuracy).")


@dataclass
class Row:
    """Formatted cells (the first is the label); `best` holds indices to emphasise; `error` replaces the rest."""
    cells: list[str]
    best: set[int] = field(default_factory=set)
    error: str | None = None


@dataclass
class Table:
    """A titled table with an optional note under it."""
    title: str
    headers: list[str]
    rows: list[Row]
    note: str = ""
    right: bool = True  # right-align every column after the first (numbers)


def models_in(results: dict) -> list[str]:
    """Model names in the order their first cell appears."""
    return list(dict.fromkeys(c["model"] for c in results["cells"]))


def param_count(results: dict, model: str) -> int | None:
    """The shipped spec's parameter count, else whatever a cell's config recorded."""
    import models  # light: numpy and tomllib only
    if model in models.shipped():
        return models.get(model).param_count()
    for cell in results["cells"]:
        if cell["model"] == model and cell.get("parameters"):
            return cell["parameters"]
    return None


def backend_label(cell: dict) -> str:
    """"torch (compile)": the backend and the mode it ran in, when it has modes."""
    name, _, asked = cell["backend"].partition("@")
    mode = cell.get("mode") or asked
    return f"{name} ({mode})" if mode else name


def labeller(cells: list[dict]):
    """A function naming a cell by backend, plus batch size, device, dtype, repeat where the run has several."""
    keys = ("batch_size", "device", "dtype", "repeat")
    varying = [k for k in keys if len({c.get(k) for c in cells} - {None}) > 1]
    words = {"batch_size": "batch {}", "device": "{}", "dtype": "{}", "repeat": "repeat {}"}

    def label(cell: dict) -> str:
        text = " ".join([backend_label(cell)] + [words[k].format(cell[k]) for k in varying if cell.get(k) is not None])
        return text + PLUGIN_MARKS.get(cell.get("conformance"), "")
    return label


# A plugin's rows say whether it passed the conformance kit; built-ins carry no mark.
PLUGIN_MARKS = {"passed": " (plugin, conformant)", "failed": " (plugin, NONCONFORMANT)"}


def model_table(results: dict, model: str) -> Table:
    """A row per cell of one model, a column per metric, the best of each column marked."""
    cells = [c for c in results["cells"] if c["model"] == model]
    label = labeller(results["cells"])
    rows = []
    for cell in cells:
        if cell["status"] != "ok":
            rows.append(Row([label(cell)], error=fmt.one_line(cell.get("error"))))
        else:
            rows.append(Row([label(cell)] + [col.show(cell["metrics"]) for col in COLUMNS]))
    _mark_best(cells, rows)
    count = param_count(results, model)
    title = f"{model} ({count:,} parameters)" if count else model
    return Table(title, ["backend"] + [c.header for c in COLUMNS], rows)


def _mark_best(cells: list[dict], rows: list[Row]) -> None:
    """Within each batch size, mark every row that holds a column's best value, when two or more compete."""
    for j, col in enumerate(COLUMNS, start=1):
        for batch in {c.get("batch_size") for c in cells}:
            values = [(i, c["metrics"].get(col.key)) for i, c in enumerate(cells)
                      if c["status"] == "ok" and c.get("batch_size") == batch]
            values = [(i, v) for i, v in values if isinstance(v, (int, float))]
            if len(values) < 2:
                continue
            best = (max if col.better == HIGH else min)(v for _, v in values)
            for i, v in values:
                if v == best:
                    rows[i].best.add(j)


def overhead_table(results: dict) -> Table | None:
    """fwbench's step time beside a hand-written loop's, per backend; None when the run has no overhead."""
    overhead = results.get("overhead") or {}
    if not overhead:
        return None
    rows = [Row([name, fmt.ms(o.get("fwbench_step_ms")), fmt.ms(o.get("plain_step_ms")),
                 "—" if o.get("ratio") is None else f"{o['ratio']:.3f}"]) for name, o in overhead.items()]
    return Table("Harness overhead", ["backend", "fwbench step ms", "hand-written step ms", "ratio"], rows,
                 "ratio is fwbench's step time over a plain hand-written training loop's, same model and batch.")


def run_facts(results: dict) -> list[tuple[str, str]]:
    """(label, text) pairs describing where and when the run happened."""
    m = results.get("machine") or {}
    gpus = m.get("gpu") or []
    gpu = ", ".join(f"{g.get('name')} ({fmt.count(g.get('memory_mb'))} MB, driver {g.get('driver')})"
                    for g in gpus) or "no GPU"
    ram = f"{m['ram_gb']} GB RAM" if m.get("ram_gb") is not None else "RAM unknown"
    git = results.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    when = results.get("started") or "unknown"
    status = results.get("status") or "unknown"
    return [("Machine", f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores, {ram}, {gpu}"),
            ("OS", f"{m.get('os', 'unknown')}, Python {m.get('python', '?')}"),
            ("Frameworks", ", ".join((results.get("frameworks") or {}).values()) or "unknown"),
            ("Commit", commit),
            ("Suite", f"{results.get('suite', '?')} ({status}, {len(results['cells'])} cells)"),
            ("Date", when)]


def metric_notes(results: dict) -> list[tuple[str, str]]:
    """(metric, unit and method) for every metric the run documents."""
    return [(name, f"{d.get('unit', '')}: {d.get('how', '')}".strip(": "))
            for name, d in (results.get("metrics") or {}).items() if isinstance(d, dict)]

"""Format-neutral tables built from one results dict; markdown.py and html.py only render them."""
from __future__ import annotations

from dataclasses import dataclass, field

from fwbench.harness.bench.metrics import COLUMNS, HIGHER, show
from fwbench.harness import fmt
from fwbench.harness.conventions.view import sections
from fwbench.harness.reporting.baseline import judged_against
from fwbench.harness.reporting.verdicts import Verdict

EPOCH_NOTE = ("Each cell ran in several fresh processes (runs), in rounds that visit every cell once in a seeded "
              "random order. Step ms is the median over runs of each run's median step, with its 95% bootstrap "
              "interval over runs in brackets; a fused mode (flax scan) is timed over whole calls of many steps. "
              "GFLOP/s is the model's FLOPs per training step (counted from the spec: every layer forward and "
              "backward and the loss, not the optimizer) over the median step; % of peak (MFU) divides it by the "
              "machine's float32 matmul peak, the faster of the run's two calibrations, and is a dash on a GPU or "
              "where the run counted no FLOPs. Epoch time is the median of the recipe's epochs after the first (none "
              "when the recipe has one epoch), with the data already in memory (or on the device), evaluation "
              "excluded; the recipe runs once, in "
              "the first run. Compile s is what the first call on a fresh model took beyond an ordinary one. Peak MB "
              "is the run's own process image (VmHWM) after step timing. Time to accuracy counts all training time, "
              "compilation included. A row marked contended had its step timing measured while other work used the CPU "
              "and gets no verdict; training contended marks the same for its training run (epoch and time to "
              "accuracy). A dash in the training columns marks a cell timed but not trained. "
              "Bold marks the best value in each column among rows of the same batch size.")
VERDICT_NOTE = ("The verdict column compares each row's step time with the baseline row of its model: the ratio of "
                "medians, its 95% bootstrap interval, and faster or slower only when a rank test over runs (Holm-"
                "corrected over every row of the run) rejects equality and the change is beyond the noise band; "
                "within noise when it is smaller than the band; no significant difference when neither can be "
                "said; no verdict with too few runs, unstable runs or contention.")


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
    from fwbench import models  # light: numpy and tomllib only
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
    if cell.get("workers"):  # a data-parallel cell: its workers are part of what it is
        mode = f"{mode}, {cell['workers']} worker{'s' if cell['workers'] > 1 else ''}"
    return f"{name} ({mode})" if mode else name


def labeller(cells: list[dict]):
    """A function naming a cell by backend, plus batch size, device, dtype, repeat where the run has several."""
    keys = ("batch_size", "device", "dtype")
    varying = [k for k in keys if len({c.get(k) for c in cells} - {None}) > 1]
    words = {"batch_size": "batch {}", "device": "{}", "dtype": "{}"}

    def label(cell: dict) -> str:
        text = " ".join([backend_label(cell)] + [words[k].format(cell[k]) for k in varying if cell.get(k) is not None])
        plugin = ":" in cell["backend"] or cell.get("source") not in (None, "built-in")
        contended = " (contended)" if cell.get("contended") else \
            " (training contended)" if cell.get("training_contended") else ""
        return text + (" (plugin)" if plugin else "") + contended
    return label


CONFORMANCE = {"passed": "passed", "failed": "FAILED", None: fmt.DASH}


def with_interval(cell: dict, key: str, form) -> str:
    """"3.74 [3.70, 3.80]": the median over runs and its 95% interval, where the cell has one."""
    value = (cell.get("metrics") or {}).get(key)
    ci = ((cell.get("uncertainty") or {}).get(key) or {}).get("ci")
    return form(value) + (f" [{form(ci[0])}, {form(ci[1])}]" if ci and value is not None else "")


def model_tables(results: dict, baseline: str | None = None) -> list[Table]:
    """One table per model; the verdicts against the baseline are judged once, as one family, for all of them."""
    judged = judged_against(results, baseline)
    return [model_table(results, m, judged) for m in models_in(results)]


def model_table(results: dict, model: str, judged: tuple[dict[int, Verdict], set[int]]) -> Table:
    """A row per cell of one model, a column per metric with intervals, a verdict against the baseline."""
    cells = [c for c in results["cells"] if c["model"] == model]
    label = labeller(results["cells"])
    verdicts, bases = judged
    rows = []
    for cell in cells:
        if cell["status"] != "ok":
            why = "not run (the run was interrupted)" if cell["status"] == "pending" else cell.get("error")
            rows.append(Row([label(cell)], error=fmt.one_line(why)))
            continue
        texts = [with_interval(cell, c.key, c.form) if c.key == "step_ms" else show(c, cell["metrics"])
                 for c in COLUMNS]
        verdict = verdicts.get(id(cell))
        texts.insert(1, "baseline" if id(cell) in bases else verdict.text() if verdict else fmt.DASH)
        rows.append(Row([label(cell)] + texts + [CONFORMANCE.get(cell.get("conformance"), fmt.DASH)]))
    _mark_best(cells, rows)
    count = param_count(results, model)
    title = f"{model} ({count:,} parameters)" if count else model
    baseline_name = next((backend_label(c) for c in cells if id(c) in bases), "the baseline")
    headers = ["backend", COLUMNS[0].header, f"vs {baseline_name}"] + [c.header for c in COLUMNS[1:]] + ["conformance"]
    return Table(title, headers, rows)


def _mark_best(cells: list[dict], rows: list[Row]) -> None:
    """Mark each row's best values; the verdict column sits after step ms, so later columns move one right."""
    column = {col.key: j + (j > 1) for j, col in enumerate(COLUMNS, start=1)}
    for row, keys in zip(rows, best_keys(cells)):
        row.best |= {column[k] for k in keys}


def best_keys(cells: list[dict]) -> list[set[str]]:
    """Per cell, the columns' metrics in which it holds the best value of its batch size, when two or more compete."""
    out: list[set[str]] = [set() for _ in cells]
    for col in COLUMNS:
        for batch in {c.get("batch_size") for c in cells}:
            values = [(i, c["metrics"].get(col.key)) for i, c in enumerate(cells)
                      if c["status"] == "ok" and c.get("batch_size") == batch]
            values = [(i, v) for i, v in values if isinstance(v, (int, float))]
            if len(values) < 2:
                continue
            best = (max if col.better == HIGHER else min)(v for _, v in values)
            for i, v in values:
                if v == best:
                    out[i].add(col.key)
    return out


def mode_tables(results: dict) -> list[Table]:
    """What each execution mode in the run changes, as the backend describes it; none when no cell says."""
    notes = {c["backend"]: c.get("mode_note") for c in results["cells"] if c.get("mode_note")}
    if not notes:
        return []
    rows = [Row([name, note]) for name, note in notes.items()]
    return [Table("Execution modes", ["backend", "what the mode is"], rows, right=False, note=
                  "The default mode of each backend is what a user of that framework writes; any mode that carries "
                  "fwbench's own workarounds says so here, and is shown beside the stock one.")]


def overhead_table(results: dict) -> Table | None:
    """fwbench's step time beside a hand-written loop's, per backend; None when the run has no overhead."""
    overhead = results.get("overhead") or {}
    if not overhead:
        return None
    def ratio(o: dict) -> str:
        if o.get("ratio") is None:
            return fmt.DASH
        each = o.get("ratio_each") or []
        return f"{o['ratio']:.3f}" + (f" [{min(each):.3f}, {max(each):.3f}]" if len(each) > 1 else "")
    rows = [Row([name, fmt.ms(o.get("fwbench_step_ms")), fmt.ms(o.get("plain_step_ms")), ratio(o)])
            for name, o in overhead.items()]
    return Table("Harness overhead", ["backend", "fwbench step ms", "hand-written step ms", "ratio"], rows,
                 "ratio is fwbench's step time over a plain hand-written training loop's, same model and batch: the "
                 "median over rounds that alternate the two, with the lowest and highest round in brackets.")


def conventions_tables(results: dict) -> list[Table]:
    """The frameworks' native conventions and their drifts, as the bench measured them; a line when it failed."""
    doc = results.get("conventions")
    if not doc:
        return []
    if "error" in doc:
        return [Table("Framework conventions, measured", ["convention"], [], f"not measured: {doc['error']}")]
    return [Table(s.title, s.headers, [Row(r) for r in s.rows], s.note, right=False) for s in sections(doc)]


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

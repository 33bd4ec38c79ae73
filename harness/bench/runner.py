"""Run a suite: agreement per model, then every cell in its own process, saving after each one."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import backends
from harness.bench import results
from harness.bench.checks import agreement, conformance
from harness.bench.suite import Cell, Suite, cells
from harness.progress import Progress


def run_suite(suite: Suite, out_dir: Path, log=print) -> Path:
    """Run the suite into a new results file and return its path; Ctrl-C keeps every finished cell."""
    todo = cells(suite)
    path = results.path_for(out_dir, suite.name)
    doc = results.new(suite.name, asdict(suite))
    results.save(doc, path)
    log(f"fwbench bench: suite {suite.name}, {len(todo)} cells -> {path}")
    bar = Progress(len(todo) + len(suite.models), "bench")
    try:
        for name in dict.fromkeys(backends.split(b)[0] for b in suite.backends):
            if backends.source(name) != "built-in":
                doc.setdefault("conformance", {})[name] = conformance(name, suite.device)
                results.save(doc, path)
        for i, model in enumerate(suite.models):
            doc["agreement"][model] = agreement(model, suite)
            results.save(doc, path)
            bar.update(i + 1, f"agreement {model}")
        for i, cell in enumerate(todo):
            start = time.perf_counter()
            base = backends.split(cell.backend)[0]  # conformance and agreement are per backend, not per mode
            checked = doc.get("conformance", {}).get(base)
            if checked and not checked["passed"] and not suite.allow_nonconformant:
                record = {**cell.to_dict(), "status": "error", "conformance": "failed",
                          "error": f"not run: {cell.backend} failed the conformance kit "
                                   f"({', '.join(checked['failed']) or checked.get('error')}); "
                                   "--allow-nonconformant runs it anyway"}
            else:
                record = run_cell(cell)
                if checked:
                    record["conformance"] = "passed" if checked["passed"] else "failed"
            worst = doc["agreement"].get(cell.model, {}).get("worst_rel_l2", {}).get(base)
            if record["status"] == "ok":
                record["metrics"]["agreement_worst_rel_l2"] = worst
                doc["frameworks"][base] = record["framework_version"]
            doc["cells"].append(record)
            results.save(doc, path)
            bar.update(len(suite.models) + i + 1, cell.label())
            log(f"[{i + 1}/{len(todo)}] {cell.label()}: {describe(record)} ({time.perf_counter() - start:.0f} s)")
    except KeyboardInterrupt:
        bar.close()
        results.finish(doc, "interrupted")
        results.save(doc, path)
        log(f"interrupted: {len(doc['cells'])} finished cells kept in {path}")
        raise
    bar.close()
    results.finish(doc, "complete")
    results.save(doc, path)
    return path


def run_cell(cell: Cell) -> dict:
    """The cell's record: its config plus what its fresh process measured, or the one-line reason it failed."""
    with tempfile.TemporaryDirectory(prefix="fwbench-cell-") as tmp:
        spec, out = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(cell.to_dict()))
        proc = subprocess.run([sys.executable, "-m", "harness.bench.cell", str(spec), str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if out.exists():
            result = json.loads(out.read_text())
        else:  # the process died before it could record anything: killed, out of memory, a crash in C
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            result = {"status": "error", "error": f"cell process {why}" + (f": {tail}" if tail else "")}
    return {**cell.to_dict(), **result}


def describe(record: dict) -> str:
    """One line for the log."""
    if record["status"] != "ok":
        return f"error: {record['error']}"
    m = record["metrics"]
    text = f"{m['step_ms']:.2f} ms/step, {m['images_per_s']:,.0f} images/s"
    if "test_accuracy" in m:
        tta = m["time_to_accuracy_s"]
        text += f", accuracy {100 * m['test_accuracy']:.2f}%, epoch {m['epoch_s']:.1f} s, " + \
                (f"target in {tta:.1f} s" if tta is not None else "target not reached")
    return text

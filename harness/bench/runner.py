"""Run a suite: calibrate, check every backend and mode, then run each cell in interleaved rounds, saving as it goes."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from fwbench import backends
from fwbench.backends.workers import env as worker_env
from fwbench.harness.bench import child, limits, overhead, parallel, results
from fwbench.harness.bench import dispatch as dispatch_mod
from fwbench.harness.bench.dispatch import Dispatch
from fwbench.harness.bench.checks import agreement, conformance, conventions, installed
from fwbench.harness.bench.suite import Cell, Suite, cells, rounds
from fwbench.harness.probes import contention
from fwbench.harness.probes.calibration import calibrate
from fwbench.harness.progress import Progress

# Cell-level facts a run reports; the first successful run's are kept on the cell.
INFO = ("device", "framework_version", "numerics", "allocator", "parameters", "mode", "fused", "mode_note", "data",
        "train_images", "test_images")
# A cell's temporary folder is named for the bench's pid, so that a later bench can tell a killed bench's leftovers
# (SIGKILL lets nothing clean up) from a running bench's folders.
CELL_DIR = "fwbench-cell-"


def run_suite(suite: Suite, out_dir: Path, log=print) -> Path:
    """Run the suite into a new results file and return its path; Ctrl-C or SIGTERM keeps every finished run."""
    sweep_cell_dirs()
    todo = cells(suite)
    plan = rounds(suite, len(todo))
    doc = results.new(suite.name, asdict(suite))
    doc["cells"] = [{**cell.to_dict(), "source": backends.source(cell.backend), "status": "pending", "error": None,
                     "runs": []} for cell in todo]
    store = results.Store(out_dir, doc, log)
    where = (suite.dispatch, Path(suite.dispatch.folder or store.path.parent / "submitit"))
    log(f"fwbench bench: suite {suite.name}, {len(todo)} cells x {suite.repeat} runs -> {store.path}")
    bar = Progress(len(todo) * suite.repeat + len(suite.models) + 2, "bench")
    done = 0
    try:
        doc["calibration"]["start"] = calibrate()
        run_checks(doc, suite, store, bar)
        for r, order in enumerate(plan):
            for i in order:
                record, cell = doc["cells"][i], todo[i]
                blocked = refusal(doc, cell, suite)
                if blocked:
                    record.update(status="error", error=blocked)
                elif record["runs"] and all(run["status"] != "ok" for run in record["runs"]):
                    pass  # it failed in its first round; its error would only repeat
                else:
                    add_run(doc, record, replace(cell, train=cell.train and not record["runs"]), r, where)
                store.save(doc)
                done += 1
                bar.update(len(suite.models) + 1 + done, f"{cell.label()} run {r + 1}")
                log(f"[{done}/{len(todo) * suite.repeat}] {cell.label()} run {r + 1}: {describe(record)}")
        # Contended runs are measured again once, at the end and only where a cell lacks clean runs: under
        # steal every round would otherwise double.
        for i, missing in remeasure(doc["cells"], suite.repeat):
            for _ in range(missing):
                add_run(doc, doc["cells"][i], replace(todo[i], train=False), len(plan), where)
            store.save(doc)
            log(f"[again] {todo[i].label()}, {missing} run(s) in place of contended ones: {describe(doc['cells'][i])}")
        if suite.overhead:
            bar.update(len(suite.models) + 1 + done, "harness overhead")
            run_overhead(doc, suite, store, log)
        doc["calibration"]["end"] = calibrate()
    except KeyboardInterrupt as e:
        e.path = store.path  # for the caller's summary: the exception is all it gets
        bar.close()
        limits.fill(doc)  # from whichever calibrations were taken
        results.finish(doc, "interrupted")
        store.save(doc)
        log(f"interrupted: {done} finished runs kept in {store.path}")
        raise
    bar.close()
    limits.fill(doc)  # once the end calibration is in: the run's peak is known
    results.finish(doc, "complete")
    store.save(doc)
    store.check()
    return store.path


def run_checks(doc: dict, suite: Suite, store: results.Store, bar: Progress) -> None:
    """The conformance kit for every backend and mode the suite runs, then float32 agreement per model."""
    names = [n for n in dict.fromkeys(suite.backends) if installed(n)]
    for name in names:
        if suite.conformance or backends.source(name) != "built-in":  # a plugin is always checked
            doc["conformance"][name] = conformance(name, suite.device)
            store.save(doc)
    bar.update(1, "conformance")
    for i, model in enumerate(suite.models):
        doc["agreement"][model] = agreement(model, names, suite.device)
        store.save(doc)
        bar.update(2 + i, f"agreement {model}")
    if suite.conventions:
        doc["conventions"] = conventions()  # what each framework does natively; the report shows it
        store.save(doc)


def run_overhead(doc: dict, suite: Suite, store: results.Store, log) -> None:
    """The harness-overhead stage: fwbench against hand-written loops, after the rounds, into this run's own file."""
    doc["overhead"] = overhead.measure(suite.overhead, suite.overhead_rounds, suite.overhead_steps, suite.device)
    store.save(doc)
    log(f"overhead: {overhead.describe(doc['overhead'])}")


def refusal(doc: dict, cell: Cell, suite: Suite) -> str | None:
    """Why a cell must not run: its backend and mode failed the conformance kit (unless allowed)."""
    checked = doc["conformance"].get(cell.backend)
    if not checked or checked["passed"] or suite.allow_nonconformant:
        return None
    why = ", ".join(checked["failed"]) or checked.get("error")
    return f"not run: {cell.backend} failed the conformance kit ({why}); --allow-nonconformant runs it anyway"


def attach_checks(doc: dict, record: dict) -> None:
    """The cell's own backend and mode's conformance verdict and worst gradient difference."""
    checked = doc["conformance"].get(record["backend"])
    record["conformance"] = None if not checked else "passed" if checked["passed"] else "failed"
    worst = (doc["agreement"].get(record["model"]) or {}).get("worst_rel_l2", {}).get(record["backend"])
    if record["status"] == "ok":
        record["metrics"]["agreement_worst_rel_l2"] = worst
        doc["frameworks"][backends.split(record["backend"])[0]] = record["framework_version"]


def merge(record: dict, run: dict) -> None:
    """Keep the first successful run's facts, and the training run's curves and filters, on the cell."""
    info = run.pop("info", None)
    if info and "framework_version" not in record:
        record.update({k: info.get(k) for k in INFO})
    if run.get("trained") and run.get("status") == "ok":
        record["curves"], record["filters"] = run.pop("curves", None), run.pop("filters", None)


def add_run(doc: dict, record: dict, cell: Cell, round_: int, where: tuple[Dispatch, Path] | None = None) -> None:
    """One more run of the cell, here or as a submitit job, folded into its record and figures."""
    run = run_cell(cell, round_) if where is None or where[0].executor == "process" else job_run(cell, round_, *where)
    record["runs"].append(run)
    merge(record, run)
    results.summarize(record)
    attach_checks(doc, record)
    parallel.link(doc["cells"])


def remeasure(records: list[dict], repeat: int) -> list[tuple[int, int]]:
    """(cell index, runs to add) for each cell with contended runs and fewer clean ones than its figures need."""
    out = []
    for i, record in enumerate(records):
        ok = [r for r in record["runs"] if r["status"] == "ok"]
        contended = sum(bool(r["contention"]["contended"]) for r in ok)
        missing = min(contended, min(results.MIN_CLEAN, repeat) - (len(ok) - contended))
        if missing > 0:
            out.append((i, missing))
    return out


def run_cell(cell: Cell, round_: int) -> dict:
    """The run's record: what its fresh process measured, or the one-line reason it failed, and the contention."""
    with tempfile.TemporaryDirectory(prefix=f"{CELL_DIR}{os.getpid()}-") as tmp:
        spec, out = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(cell.to_dict()))
        before, started = contention.snapshot(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        # Read by the data-parallel modes: the workers, and each one's threads.
        env = worker_env(cell.workers, cell.threads) if cell.workers else {}
        proc = child.run([sys.executable, "-m", "fwbench.harness.bench.cell", str(spec), str(out)], cell.timeout_s,
                         stdout=False, env=env)
        around = contention.between(before, contention.snapshot())
        if proc.timed_out:
            result = {"status": "error", "error": child.timed_out("cell process", cell.timeout_s)}
        elif out.exists():
            result = json.loads(out.read_text())
        else:  # the process died before it could record anything: killed, out of memory, a crash in C
            tail = proc.last_line()
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            result = {"status": "error", "error": f"cell process {why}" + (f": {tail}" if tail else "")}
    timed = result.pop("timed_contention", None)
    if timed:  # the cell's own reading over its timed steps: contended if either says so
        around = {**around, "timed": timed, "contended": around["contended"] or timed["contended"]}
    return {"round": round_, "trained": cell.train, "started": started, **result, "contention": around}


def job_run(cell: Cell, round_: int, dispatch: Dispatch, folder: Path) -> dict:
    """run_cell's record for a run done as a submitit job; the job's own node said how contended its timing was."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = dispatch_mod.run_job(cell, folder, dispatch)
    # Only the cell's reading over its timed steps: on a cluster this machine's counters say nothing of the node.
    timed = result.pop("timed_contention", None) or {"contended": False}
    contention_ = {"contended": timed["contended"], "timed": timed, "executor": dispatch.executor}
    return {"round": round_, "trained": cell.train, "started": started, **result, "contention": contention_}


def sweep_cell_dirs() -> None:
    """Remove the cell folders of benches that are gone: killed outright, they could not clean up."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CELL_DIR}*-*"):
        pid = folder.name[len(CELL_DIR):].split("-")[0]
        if pid.isdigit() and folder.is_dir() and folder.stat().st_uid == os.getuid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie no one has reaped has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc here: it answered the signal, so it is alive
        return True


def describe(record: dict) -> str:
    """One line for the log."""
    if record["status"] != "ok":
        return f"error: {record['error']}"
    m, last = record["metrics"], record["runs"][-1]
    text = f"{last['metrics']['step_ms']:.2f} ms/step" if last.get("status") == "ok" else f"run failed: {last['error']}"
    if last["contention"]["contended"]:
        seen = last["contention"].get("timed") or last["contention"]
        text += (f" (contended: other processes {100 * seen.get('others_cpu', 0):.0f}% of the CPU, "
                 f"steal {100 * seen.get('steal', 0):.0f}%)")
    if m.get("test_accuracy") is not None and last.get("trained"):
        tta = m["time_to_accuracy_s"]
        epoch = m.get("epoch_s") if m.get("epoch_s") is not None else m.get("first_epoch_s")
        text += f", accuracy {100 * m['test_accuracy']:.2f}%, epoch {epoch:.1f} s, " + \
                (f"target in {tta:.1f} s" if tta is not None else "target not reached")
    return text

"""The checks a bench run records beside its timings, per NAME@MODE: conformance and agreement, in fresh processes."""
from __future__ import annotations

import json
import sys
import time

from fwbench import backends
from fwbench.harness.bench import child

# Generous limits, in seconds, on each child: the slowest kit seen (flax, 15 s on 2 cores) is far below the first,
# so only a hung plugin or framework reaches one. Tests lower them.
TIMEOUT_S = {"conformance": 600, "agree": 600, "backends": 60, "conventions": 300}


def fwbench(command: str, args: list[str], expect: type = dict) -> tuple:
    """Run `fwbench COMMAND ARGS` in a fresh process: its last stdout line as JSON, or None and the one-line reason."""
    limit = TIMEOUT_S[command]
    proc = child.run([sys.executable, "-m", "fwbench", command, *args], limit)
    if proc.timed_out:
        return None, child.timed_out(f"fwbench {command}", limit)
    try:
        doc = json.loads(proc.last_line("stdout"))
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, expect):
        return doc, ""
    return None, proc.last_line() or f"fwbench {command} failed (exit {proc.returncode}) and said nothing"


def conformance(name: str, device: str) -> dict:
    """The conformance kit's verdict on one backend in one mode ("NAME@MODE"), from a fresh process; a crash fails."""
    start = time.perf_counter()
    doc, why = fwbench("conformance", [name, "--device", device, "--json"])
    seconds = round(time.perf_counter() - start, 1)  # the whole process: imports and compilation included
    if doc is None:
        return {"passed": False, "failed": [], "seconds": seconds, "error": why}
    failed = [c["name"] for c in doc["checks"] if c["status"] == "fail"]
    unsupported = [c["name"] for c in doc["checks"] if c["status"] == "not supported"]
    return {"passed": doc["passed"], "failed": failed, "unsupported": unsupported, "mode": doc.get("mode"),
            "version": doc.get("version"), "source": doc.get("source"), "seconds": seconds}


def agreement(model: str, names: list[str], device: str) -> dict:
    """fwbench agree in float32 on one MNIST batch, summarised per NAME@MODE: one run for every name that can share
    a process, one more for each framework set up per process (keras@jax)."""
    # A missing framework leaves its names out; a mode that refuses the model or device becomes a note
    # (--skip-unsupported); an error is recorded, not raised.
    names = [n for n in dict.fromkeys(names) if installed(n)]
    if not names:
        return {"error": "no installed backend to compare"}
    merged: dict = {}
    for group in backends.processes(names):
        doc, why = fwbench("agree", ["--model", model, "--backends", ",".join(group), "--device", device,
                                     "--batch-size", "32", "--skip-unsupported", "--json"])
        if doc is None:
            return {"error": why}
        merged = _merge(merged, _summary(doc))
    return merged


def _summary(doc: dict) -> dict:
    table = {row: {pair: m["rel_l2"] for pair, m in cells_.items()} for row, cells_ in doc["table"].items()}
    compared = list(doc["backends"])  # keyed as given: "torch@compile", "flax@scan", ...
    worst = {n: max(table[row][f"{n}~reference"] for row in table) for n in compared}
    return {"worst_rel_l2": worst, "modes": {n: doc["backends"][n].get("mode") for n in compared}, "table": table,
            "ties": {n: doc["backends"][n]["ties"] for n in compared}, "passed": doc["passed"],
            "tolerance": doc["tolerance"]["grad_rel_l2"], "data": doc["data"], "notes": doc["notes"]}


def _merge(done: dict, more: dict) -> dict:
    """Two runs' summaries as one: the per-name entries joined, passed only if both passed."""
    if not done:
        return more
    out = dict(done)
    for key in ("worst_rel_l2", "modes", "ties"):
        out[key] = done[key] | more[key]
    rows = dict.fromkeys([*done["table"], *more["table"]])
    out["table"] = {row: done["table"].get(row, {}) | more["table"].get(row, {}) for row in rows}
    out["passed"] = done["passed"] and more["passed"]
    out["notes"] = list(dict.fromkeys(done["notes"] + more["notes"]))
    return out


def installed(name: str) -> bool:
    """A module path, or a registered backend whose framework is installed."""
    base = backends.split(name)[0]
    return ":" in base or (base in backends.names() and not backends.missing(base))


def conventions() -> dict:
    """fwbench conventions, measured in a fresh process: the document, or {"error": why}."""
    doc, why = fwbench("conventions", ["--json"])
    return doc if doc is not None else {"error": why}

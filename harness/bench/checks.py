"""The checks a bench run records beside its timings, per NAME@MODE: conformance and agreement, in fresh processes."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import backends


def conformance(name: str, device: str) -> dict:
    """The conformance kit's verdict on one backend in one mode ("NAME@MODE"), from a fresh process; a crash fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "conformance", name, "--device", device, "--json"],
                          capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)  # the whole process: imports and compilation included
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"passed": False, "failed": [], "seconds": seconds,
                "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    failed = [c["name"] for c in doc["checks"] if c["status"] == "fail"]
    return {"passed": doc["passed"], "failed": failed, "mode": doc.get("mode"), "version": doc.get("version"),
            "source": doc.get("source"), "seconds": seconds}


def agreement(model: str, names: list[str], device: str) -> dict:
    """fwbench agree in float32 on one MNIST batch, every NAME@MODE in one run, summarised per NAME@MODE."""
    # A missing framework leaves its names out; a mode that refuses the model or device becomes a note
    # (--skip-unsupported); an error is recorded, not raised.
    names = [n for n in dict.fromkeys(names) if installed(n)]
    if not names:
        return {"error": "no installed backend to compare"}
    cmd = [sys.executable, "-m", "harness", "agree", "--model", model, "--backends", ",".join(names),
           "--device", device, "--batch-size", "32", "--skip-unsupported", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (proc.stderr.strip().splitlines() or ["fwbench agree failed"])[-1]}
    table = {row: {pair: m["rel_l2"] for pair, m in cells_.items()} for row, cells_ in doc["table"].items()}
    compared = list(doc["backends"])  # keyed as given: "torch@compile", "flax@scan", ...
    worst = {n: max(table[row][f"{n}~reference"] for row in table) for n in compared}
    return {"worst_rel_l2": worst, "modes": {n: doc["backends"][n].get("mode") for n in compared}, "table": table,
            "ties": {n: doc["backends"][n]["ties"] for n in compared}, "passed": doc["passed"],
            "tolerance": doc["tolerance"]["grad_rel_l2"], "data": doc["data"], "notes": doc["notes"]}


def installed(name: str) -> bool:
    """A module path, or a registered backend whose framework is installed."""
    base = backends.split(name)[0]
    return ":" in base or (base in backends.names() and not backends.missing(base))

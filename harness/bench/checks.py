"""The checks a bench run records beside its timings: the conformance kit and float32 agreement, each in a fresh process."""
from __future__ import annotations

import json
import subprocess
import sys

import backends
from harness.bench.suite import Suite


def conformance(name: str, device: str) -> dict:
    """The conformance kit's verdict on a plugin, from a fresh process; a crash counts as failing."""
    proc = subprocess.run([sys.executable, "-m", "harness", "conformance", name, "--device", device, "--json"],
                          capture_output=True, text=True)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"passed": False, "failed": [], "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    failed = [c["name"] for c in doc["checks"] if c["status"] == "fail"]
    return {"passed": doc["passed"], "failed": failed, "version": doc.get("version"), "source": doc.get("source")}


def agreement(model: str, suite: Suite) -> dict:
    """fwbench agree in float32 on one MNIST batch, summarised per backend; an error is recorded, not raised."""
    bases = dict.fromkeys(backends.split(b)[0] for b in suite.backends)
    names = [b for b in bases if ":" in b or (b in backends.names() and not backends.missing(b))]
    cmd = [sys.executable, "-m", "harness", "agree", "--model", model, "--backends", ",".join(names),
           "--device", suite.device, "--batch-size", "32", "--skip-unsupported", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (proc.stderr.strip().splitlines() or ["fwbench agree failed"])[-1]}
    table = {row: {pair: m["rel_l2"] for pair, m in cells_.items()} for row, cells_ in doc["table"].items()}
    compared = list(doc["backends"])
    worst = {n: max(table[row][f"{n}~reference"] for row in table) for n in compared}
    return {"worst_rel_l2": worst, "table": table, "ties": {n: doc["backends"][n]["ties"] for n in compared},
            "passed": doc["passed"], "tolerance": doc["tolerance"]["grad_rel_l2"], "data": doc["data"],
            "notes": doc["notes"]}

"""The harness-overhead stage of a suite: benchmarks/overhead.py in a fresh process, its figures kept in the run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fwbench.harness.bench import child

ROOT = Path(__file__).resolve().parents[2]
# The hand-written loops it times against live beside it in benchmarks/, outside the installed package.
SCRIPT = ROOT / "benchmarks" / "overhead.py"
TIMEOUT_S = 900  # the default suite's stage takes about a minute; a hung framework must not hang the bench


def measure(frameworks: tuple[str, ...], rounds: int, steps: int, device: str, timeout_s: float = TIMEOUT_S) -> dict:
    """{framework: figures} as the results file's "overhead" keeps them, or {framework: {"error": why}} for each."""
    if not SCRIPT.exists():
        return _failed(frameworks, f"{SCRIPT} is not here: the overhead stage needs a source checkout of fwbench")
    # A fresh process, as for every cell: the runner never imports a framework, and a crash costs only this stage.
    proc = child.run([sys.executable, str(SCRIPT), "--frameworks", ",".join(frameworks), "--rounds", str(rounds),
                      "--steps", str(steps), "--device", "cuda" if device == "cuda" else "cpu", "--json"], timeout_s)
    if proc.timed_out:
        return _failed(frameworks, child.timed_out("benchmarks/overhead.py", timeout_s))
    lines = proc.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])["overhead"] if proc.returncode == 0 else None
    except (IndexError, KeyError, TypeError, json.JSONDecodeError):
        found = None
    if not isinstance(found, dict):
        return _failed(frameworks, f"benchmarks/overhead.py exit {proc.returncode}: {proc.last_line() or 'no output'}")
    return found


def _failed(frameworks: tuple[str, ...], why: str) -> dict:
    return {name: {"error": why} for name in frameworks}


def describe(overhead: dict) -> str:
    """One line for the log."""
    return ", ".join(f"{name} {o['ratio']:.3f}x a hand-written loop" if o.get("ratio") is not None
                     else f"{name} not measured ({o.get('error')})" for name, o in overhead.items())

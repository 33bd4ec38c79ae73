"""Where a mode's training steps leave the float64 reference: each step's update, per parameter, in a fresh process.

The conformance kit on an H200 (results/h200/20261204/) failed torch@cudagraphs's 3-step optimizer checks (up to
0.64 relative) and stock flax's SGD-momentum checks (about 1e-8) on cuda. This prints, per step, the relative
error of every parameter's update against the NumPy engine in float64, so one short device call says at which step
an error appears and whether it needs other models built first in the process (torch's recompile limit was hit).

Usage: python benchmarks/gpu_diagnose.py [--device cuda] [--names torch@cudagraphs,flax] [--steps 5]
       [--before 0,10]   (models built and trained in the process before the one measured)
Each (name, optimizer, before) case runs in its own process and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from fwbench import backends
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.conformance.cases import params_of, spec_of
from fwbench.harness.conformance.context import cast
from fwbench.harness.conformance.measure import rel_error
from fwbench.harness.conformance.training import CASE, CONFIGS, batches

# The kit's own optimizer rows, on its own batches of 8: what failed there is what this steps through.
OPTIMIZERS = {"sgd": CONFIGS["sgd momentum 0.9"], "adam": CONFIGS["adam"]}


def trajectory(backend, config, steps: int) -> list[dict[str, np.ndarray]]:
    """The parameters before each step and after the last, in float64."""
    backend.init_optimizer(config)
    out = [{k: np.asarray(v, np.float64) for k, v in backend.get_params().items()}]
    for x, y in batches(steps, 8):
        backend.train_step(backend.prepare_batch(x, y))
        out.append({k: np.asarray(v, np.float64) for k, v in backend.get_params().items()})
    return out


def one(name: str, device: str, optimizer: str, steps: int, before: int) -> dict:
    """The case's per-step update errors, measured in this process."""
    spec, start = spec_of(CASE), cast(params_of(CASE), "float64")
    config = OPTIMIZERS[optimizer]
    for _ in range(before):  # other models first, as the kit builds dozens before its optimizer rows
        trajectory(backends.build(name, spec, start, device=device, dtype="float64"), config, 3)
    got = trajectory(backends.build(name, spec, start, device=device, dtype="float64"), config, steps)
    want = trajectory(NumpyBackend(spec, start, dtype="float64"), config, steps)
    errors = [{p: rel_error(got[k][p] - got[k - 1][p], want[k][p] - want[k - 1][p])[0] for p in want[0]}
              for k in range(1, steps + 1)]
    worst = [max(row.values()) for row in errors]
    return {"name": name, "device": device, "optimizer": optimizer, "before": before, "worst_per_step": worst,
            "per_step": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--names", default="torch@cudagraphs,flax")
    ap.add_argument("--optimizers", default="sgd,adam")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--before", default="0,10")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one case, this process
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.names, a.device, a.optimizers, a.steps, int(a.before))))
        return
    for name in a.names.split(","):
        for optimizer in a.optimizers.split(","):
            for before in a.before.split(","):
                cmd = [sys.executable, __file__, "--one", "--names", name, "--device", a.device, "--optimizers",
                       optimizer, "--steps", str(a.steps), "--before", before]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                except subprocess.TimeoutExpired:
                    print(json.dumps({"name": name, "optimizer": optimizer, "before": before, "error": "timed out"}))
                    continue
                lines = done.stdout.strip().splitlines()
                if done.returncode or not lines:
                    tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
                    print(json.dumps({"name": name, "optimizer": optimizer, "before": before, "error": tail[0]}))
                else:
                    print(lines[-1], flush=True)


if __name__ == "__main__":
    main()

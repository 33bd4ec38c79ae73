"""benchmarks/numpy_profile.py: it runs, and it runs the engine as a bench cell does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}  # fwbench's own setting, not ours
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_imported_it_leaves_blas_threads_lendable_as_in_a_bench_cell():
    # NumPy imported first would load OpenBLAS before fwbench sets its thread timeout: dense layers then take the
    # slower path, and the profile misreads them.
    done = run("-c", "import sys; sys.path.insert(0, 'benchmarks'); import numpy_profile; "
                     "import fwbench; print(fwbench.BLAS_THREADS_SLEEP)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_layers_times_every_op_of_the_plan():
    done = run("benchmarks/numpy_profile.py", "layers", "--model", "tinycnn", "--steps", "2", "--warmup", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("tinycnn:") and "ms/step" in lines[0]
    assert lines[-1].strip().endswith("the rest: loss, the update, the graph")

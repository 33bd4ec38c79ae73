"""The allocator setting bench cells and commands run under."""
import subprocess
import sys

import pytest

from fwbench.harness.allocator import SETTINGS, tune

# Three 4 MiB temporaries per "step", like a training step's activations; prints the page faults of 50 steps.
CHURN = """
import resource, sys, numpy as np
if sys.argv[1] == "tune":
    from fwbench.harness.allocator import tune; tune()
def step():
    a, b, c = (np.ones(4 * 2**20 // 8) for _ in range(3))
    return a.sum() + b.sum() + c.sum()
for _ in range(3): step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50): step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_tune_stops_refaulting_freed_blocks_every_step():
    settings = tune()
    if not settings:
        pytest.skip("not glibc: nothing to tune")
    assert settings["allocator"] == "glibc" and settings["M_TRIM_THRESHOLD"] == SETTINGS["M_TRIM_THRESHOLD"]
    assert faults("default") > 50 * 1024  # glibc's default: each step's 12 MiB is faulted in again
    assert faults("tune") < 1000

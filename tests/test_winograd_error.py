"""benchmarks/winograd_error.py: the float32 error of the direct path and of Winograd under given points."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fwbench.backends.engine import winograd

ROOT = Path(__file__).resolve().parents[1]
CASE = (2, 12, 12, 8, 8, 3, 1)


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for name in ("winograd_error", "winograd"):
        sys.modules.pop(name, None)
    import winograd_error
    return winograd_error


def test_winograd_rounds_more_than_the_direct_path_and_the_points_are_restored(bench):
    points, before = winograd.POINTS, winograd.transforms(4, 3, np.float32)
    direct = bench.errors(CASE, seeds=2, points=None)
    ours = bench.errors(CASE, seeds=2, points=points)
    other = bench.errors(CASE, seeds=2, points=(0.0, 1.0, -1.0, 0.5, -2.0, 2.0, -0.5))
    assert winograd.POINTS == points
    assert all(np.array_equal(a, b) for a, b in zip(winograd.transforms(4, 3, np.float32), before))
    assert all(0 < d < 1e-6 for d in direct)
    assert all(d < w < 1e-5 for d, w in zip(direct[:3], ours[:3]))  # the value and the input and weight gradients
    assert other[:3] != ours[:3]  # the points given are the points used


def test_the_table_has_a_row_per_conv_and_path():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winograd_error.py"), "16to16", "--batch", "1",
                           "--seeds", "1", "--points", "0,1,-1,0.5,-2,2,-0.5"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["direct", "winograd", "winograd, --points"]


def test_an_unknown_conv_is_one_line(bench):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winograd_error.py"), "nope"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT / "benchmarks")
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        f"winograd_error.py: unknown conv nope; choose from {', '.join(bench.CONVS)}"]

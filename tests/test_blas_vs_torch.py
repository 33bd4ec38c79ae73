"""benchmarks/blas_vs_torch.py: NumPy's and torch's GEMM timed on the same shapes, as a table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_row_times_both_libraries_on_the_shape(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("blas_vs_torch", None)
    import blas_vs_torch
    row = blas_vs_torch.measure((16, 8, 4), threads=1, calls=3, rounds=2)
    assert row["numpy_ms"] > 0 and row["torch_ms"] > 0
    assert row["ratio"] == pytest.approx(row["numpy_ms"] / row["torch_ms"])
    assert row["numpy_gflops"] == pytest.approx(2 * 16 * 8 * 4 / 1e9 / row["numpy_ms"] * 1e3)


def test_the_table_has_a_row_per_shape_and_thread_count():
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "blas_vs_torch.py"), "--shapes", "4,3,2;5,4,3",
                           "--threads", "1,2", "--calls", "2", "--rounds", "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| M x K by K x N |") and len(lines) == 2 + 4
    assert [line.split("|")[1:3] for line in lines[2:]] == [[" 4 x 3 x 2 ", " 1 "], [" 4 x 3 x 2 ", " 2 "],
                                                           [" 5 x 4 x 3 ", " 1 "], [" 5 x 4 x 3 ", " 2 "]]

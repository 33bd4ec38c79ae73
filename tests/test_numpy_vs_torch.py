"""benchmarks/numpy_vs_torch.py: docs/performance.md's ratios from a results file, and one line on a bad one."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_vs_torch.py"


def cell(backend: str, steps: list[float], contended_round: int | None = None) -> dict:
    runs = [{"round": r, "status": "ok", "metrics": {"step_ms": ms},
             "contention": {"contended": r == contended_round}} for r, ms in enumerate(steps)]
    return {"model": "vgg", "backend": backend, "status": "ok", "runs": runs,
            "metrics": {"step_ms": sorted(steps)[len(steps) // 2], "step_gflop": 1.8, "peak_rss_mb": 100.0}}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_ratio_is_the_median_of_each_rounds_ratio(tmp_path):
    doc = {"cells": [cell("numpy", [10, 30, 12, 9]), cell("torch", [10, 10, 10, 10], contended_round=1)]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    # Round 1 (3.0) is contended: left out, the median of 1.0, 1.2 and 0.9 is 1.0.
    assert "**1.00** [0.90, 1.20] (3)" in run(str(path)).stdout
    assert "**1.10** [0.90, 3.00] (4, 1 contended)" in run(str(path), "--with-contended").stdout


def test_a_file_that_is_not_a_results_file_gets_one_line_and_a_nonzero_exit(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text("not json")
    for args in [(str(tmp_path / "missing.json"),), (str(bad),), ()]:
        done = run(*args)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2

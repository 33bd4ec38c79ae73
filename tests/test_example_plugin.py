"""The example plugin, pip-installed outside the repository: discovered, conformant, and a row in a bench report."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fwbench.harness.data import COUNTS, FILES
from fwbench.harness.data.idx import write_idx

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugins" / "fwbench-jaxraw"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the example plugin needs jax")]


def synthetic_mnist(folder: Path) -> Path:
    """Full-size random MNIST IDX files: the data loader insists on 60,000/10,000 rows, never the network."""
    rng = np.random.default_rng(0)
    for field, name in FILES.items():
        n = COUNTS["train" if field.startswith("train") else "test"]
        shape = (n, 28, 28) if field.endswith("_x") else (n,)
        write_idx(folder / name, rng.integers(0, 256 if field.endswith("_x") else 10, shape, dtype=np.uint8))
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Environment for fwbench subprocesses that sees fwbench-jaxraw installed in a temporary folder."""
    tmp = tmp_path_factory.mktemp("plugin")
    # pip builds in the source tree, so it builds a copy; --target leaves the shared venv alone, and
    # --no-build-isolation --no-index build offline with the venv's setuptools (about a second).
    src = shutil.copytree(PLUGIN, tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(tmp / "site"), str(src)]
    proc = subprocess.run(pip, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (tmp / "mnist").mkdir()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp / "site"), str(ROOT)]),
            "FWBENCH_DATA": str(synthetic_mnist(tmp / "mnist"))}


def fwbench(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwbench", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_installed_plugin_is_listed_with_its_distribution(env):
    proc = fwbench(env, "backends", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["jaxraw"]["source"] == "plugin fwbench-jaxraw 0.1.0"
    assert rows["jaxraw"]["status"] == "ok" and "cpu" in rows["jaxraw"]["devices"]
    assert rows["jaxraw"]["version"].startswith("jax ")


def test_plugin_passes_the_kit_and_is_a_row_of_a_quick_bench_report(env, tmp_path):
    # One bench, whose conformance check is `fwbench conformance jaxraw` in a process of its own: the kit's 20 s
    # are paid once.
    proc = fwbench(env, "bench", "--suite", "quick", "--backends", "numpy,jaxraw", "--models", "mlp", "--repeat", "2",
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    path = next(tmp_path.glob("bench-*.json"))
    doc = json.loads(path.read_text())
    kit = doc["conformance"]["jaxraw"]
    assert kit["passed"] and not kit["failed"], kit
    assert kit["source"] == "plugin fwbench-jaxraw 0.1.0"
    # The example lowers every layer type, state and masks included, rather than declaring any unsupported.
    assert not [name for name in kit["unsupported"] if name.startswith("lowering/")], kit["unsupported"]
    cells = [c for c in doc["cells"] if c["backend"] == "jaxraw"]
    assert cells and all(c["status"] == "ok" and c["conformance"] == "passed" for c in cells), cells
    assert doc["agreement"]["mlp"]["worst_rel_l2"]["jaxraw"] < 1e-5
    report = fwbench(env, "report", str(path))
    assert report.returncode == 0, report.stderr
    row = next((line for line in report.stdout.splitlines() if line.startswith("| jaxraw (plugin) ")), None)
    assert row and row.rstrip().endswith("| passed |"), report.stdout

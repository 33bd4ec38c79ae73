"""`fwbench conformance` and the kit's pytest plugin: one row or test per check, failures named, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwbench import backends
from fwbench.harness.conformance import BATTERY
from wrongmod import OPTIMIZER_ROWS, SCALED_CONV_FAILS

ROOT = Path(__file__).resolve().parents[1]
NAMES = [check.name for check in BATTERY]


def test_cli_prints_one_row_per_check_and_exits_1_on_a_failure(wrong, capsys, cli):
    assert cli(["wrongmod:ScaledConvGrad"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("fwbench conformance: wrongmod:ScaledConvGrad (numpy ") and "module path" in lines[0]
    body = lines[lines.index("") + 3: lines.index("", lines.index("") + 1)]  # table rows after header and rule
    assert [line.split("  ")[0] for line in body] == NAMES
    row = next(line for line in body if line.startswith("backward/conv2d 3x3 "))
    assert " FAIL " in row and "1.0e-01" in row and "gradient of 0.weight (conv2d)" in row
    assert lines[-1].startswith("NOT conformant: ") and "backward/relu" in lines[-1]


def test_cli_json_document(capsys, cli):
    assert cli(["numpy", "--json", "--device", "auto"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"backend", "source", "version", "device", "dtype", "checks", "passed"} <= set(doc)
    assert doc["backend"] == "numpy" and doc["device"] == "cpu" and doc["passed"] is True
    assert all({"name", "status", "error", "bound", "detail"} <= set(c) for c in doc["checks"])


def test_cli_refuses_a_device_the_backend_lacks(cli):
    with pytest.raises(backends.BackendError, match="cannot use device 'cuda'"):
        cli(["numpy", "--device", "cuda"])


def pytest_run(args: list[str], cwd: Path, extra_path: Path) -> subprocess.CompletedProcess:
    """pytest in a fresh process with only this plugin loaded (no entry points, so no double registration)."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(extra_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "fwbench.harness.conformance.pytest_plugin",
                           "-p", "no:cacheprovider", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_pytest_plugin_runs_one_test_per_check(tmp_path):
    proc = pytest_run(["--fwbench-backend", "numpy", "-v"], tmp_path, tmp_path)  # no test files of its own
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(BATTERY)} passed" in proc.stdout.splitlines()[-1]
    assert "fwbench::test_conformance[backward/conv2d 3x3 stride 2 padding 1] PASSED" in proc.stdout


def test_pytest_plugin_fails_wrong_checks_and_skips_unsupported_ones(tmp_path, wrong_dir):
    (tmp_path / "test_own.py").write_text("def test_authors_own():\n    assert sorted([2, 1]) == [1, 2]\n")
    proc = pytest_run(["--fwbench-backend", "wrongmod:ScaledConvGrad", "--fwbench-backend", "wrongmod:NoOptimizers",
                       "-q", "-rfs"], tmp_path, wrong_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = proc.stdout.splitlines()[-1]
    fails, skips = len(SCALED_CONV_FAILS), len(OPTIMIZER_ROWS)
    assert summary.startswith(f"{fails} failed, {2 * len(BATTERY) - fails - skips + 1} passed, {skips} skipped"), (
        summary)
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == fails and all("[wrongmod:ScaledConvGrad " in line for line in failed)
    assert "FAILED fwbench::test_conformance[wrongmod:ScaledConvGrad backward/conv2d 3x3]" in proc.stdout
    # The failure section says which layer and parameter, without a traceback.
    assert "\nconv2d 3x3: gradient of 0.weight (conv2d) off by 1.0e-01 relative (bound 1e-10)\n" in proc.stdout
    assert "not supported: numpy does not support optimizer 'adam'" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_pytest_plugin_reports_a_backend_that_cannot_load_as_a_usage_error(tmp_path):
    proc = pytest_run(["--fwbench-backend", "nosuch"], tmp_path, tmp_path)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--fwbench-backend nosuch: unknown backend 'nosuch'" in proc.stderr

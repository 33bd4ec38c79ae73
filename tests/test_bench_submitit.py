"""fwbench bench --executor submitit: each run a submitit job (its local executor here), results in the same form."""
import json
import subprocess
import sys

import pytest

from fwbench.harness.cli import main

pytest.importorskip("submitit")

ARGS = ["--suite", "quick", "--backends", "numpy", "--models", "mlp", "--repeat", "1", "--no-conformance"]


def bench(out, *extra) -> dict:
    done = subprocess.run([sys.executable, "-m", "fwbench", "bench", *ARGS, "--out", str(out), "--json", *extra],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    path = json.loads(done.stdout.splitlines()[-1])["path"]
    return json.loads(open(path).read())


def test_a_submitit_run_has_the_form_of_a_plain_one_and_each_run_its_node(tmp_path):
    jobs = bench(tmp_path / "jobs", "--executor", "submitit", "--cluster", "local")
    plain = bench(tmp_path / "plain")
    [job_cell], [plain_cell] = jobs["cells"], plain["cells"]
    assert job_cell["status"] == plain_cell["status"] == "ok"
    assert set(job_cell) == set(plain_cell) and set(job_cell["metrics"]) == set(plain_cell["metrics"])
    runs = job_cell["runs"]  # a contended run is measured once more, so a busy machine gives two
    assert len(runs) == 1 or (len(runs) == 2 and runs[0]["contention"]["contended"]), runs
    for run in runs:
        assert set(run) - set(plain_cell["runs"][0]) == {"machine"} and run["machine"]["cpu"]
    assert jobs["config"]["dispatch"]["executor"] == "submitit"
    assert list((tmp_path / "jobs" / "submitit").glob("*_log.out")), "submitit kept no log"


def test_submitit_options_need_the_submitit_executor(capsys):
    assert main(["bench", *ARGS, "--cluster", "local"]) == 2
    assert "--cluster only apply to --executor submitit" in capsys.readouterr().err

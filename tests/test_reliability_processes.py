"""`fwbench bench` under signals and faults: interrupted runs keep their results, no child outlives the bench or
leaves files behind, a hung child is stopped and recorded, and failures set the exit code."""
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fwbench.harness.bench import checks, command, runner
from fwbench.harness.bench.suite import PRESETS, cells
from fwbench.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = replace(PRESETS["quick"], name="tiny", models=("mlp",), backends=("numpy",), timed_steps=5, warmup_steps=1,
               min_timed_s=0.0, limit=640, repeat=1, conformance=False)
HANG = '''
import time

from fwbench.backends.numpy_backend import NumpyBackend


class Hang(NumpyBackend):
    """Sleeps in its constructor, as a plugin stuck on a lock or a device would."""

    def __init__(self, *args, **kwargs):
        time.sleep(3600)
'''
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process; zombies count as dead (a container may not reap)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            out[int(d.name)] = (int(ppid), cmd.replace(b"\0", b" ").decode(errors="replace"))
    return out


def wait_for(condition, seconds: float):
    """condition()'s first truthy value within `seconds`, else None."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return None


def cell_of(bench_pid: int) -> int | None:
    """The pid of the cell process the bench is running now."""
    return next((pid for pid, (ppid, cmd) in processes().items()
                 if ppid == bench_pid and "fwbench.harness.bench.cell" in cmd), None)


def cell_dir(pid: int) -> Path:
    """The temporary folder a cell process was given (its spec file's folder)."""
    args = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    return Path(args[args.index(b"fwbench.harness.bench.cell") + 1].decode()).parent


def finished_runs(out: Path) -> int:
    return sum(len(c["runs"]) for f in out.glob("bench-*.json") for c in json.loads(f.read_text())["cells"])


def start_bench(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fwbench", "bench", "--suite", "quick", "--backends", "numpy", "--models", "mlp",
           "--repeat", "3", "--out", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has installed a handler for sig (SigCgt in /proc/PID/status)."""
    status = (Path("/proc") / str(pid) / "status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


@pytest.fixture
def hang(tmp_path, monkeypatch):
    """module.path:ClassName of a plugin that hangs when built, importable by child processes; its processes killed."""
    module = f"hang_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(HANG)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), str(ROOT),
                                                                 os.environ.get("PYTHONPATH")])))
    yield f"{module}:Hang"
    for pid in survivors(module):  # only on failure: the test's own hung children
        os.kill(pid, signal.SIGKILL)


def survivors(text: str) -> list[int]:
    return [pid for pid, (_, cmd) in processes().items() if text in cmd and pid != os.getpid()]


@pytest.fixture
def deadline():
    """Fail, rather than hang, a test whose code under test never returns."""
    def expire(*_):
        raise TimeoutError("the code under test hung")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_keeps_finished_runs_and_stops_the_cell(tmp_path):
    bench = start_bench(tmp_path)
    try:
        # a cell running after one has finished: a run to keep and a child to stop
        cell = wait_for(lambda: finished_runs(tmp_path) >= 1 and cell_of(bench.pid), 180)
        assert cell, "no second cell process started"
        folder = cell_dir(cell)
        bench.send_signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, err
    assert "Traceback" not in err and "SIGTERM" in err.strip().splitlines()[-1]
    doc = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert doc["status"] == "interrupted" and doc["finished"]
    assert [r["status"] for r in doc["cells"][0]["runs"]].count("ok") >= 1
    assert cell not in processes(), "the cell process outlived the interrupted bench"
    assert not folder.exists(), f"{folder} left behind"


@pytest.mark.slow
def test_sigkill_of_the_bench_takes_its_cell_down_and_a_later_bench_sweeps_its_folder(tmp_path):
    bench = start_bench(tmp_path)
    try:
        cell = wait_for(lambda: cell_of(bench.pid), 180)
        assert cell, "no cell process started"
        folder = cell_dir(cell)
    finally:
        bench.kill()
    bench.communicate()
    assert wait_for(lambda: cell not in processes(), 30), "the cell outlived its killed bench"
    # caught as it started, it had seconds of work left: a result means it went on without its bench
    assert not (folder / "result.json").exists(), "the cell finished its run after its bench was killed"
    runner.sweep_cell_dirs()  # what every bench does first
    assert not folder.exists(), f"{folder} left behind"


def test_a_bench_first_sweeps_cell_folders_whose_bench_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale, live = tmp_path / f"fwbench-cell-{gone}-x1", tmp_path / f"fwbench-cell-{os.getpid()}-x2"
    foreign = tmp_path / "fwbench-cell-x3"  # not named by a bench's pid: not ours to judge
    for folder in (stale, live, foreign):
        folder.mkdir()
        (folder / "cell.json").write_text("{}")
    monkeypatch.setattr(runner, "calibrate", dict)
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    monkeypatch.setattr(runner, "run_cell", lambda cell, round_: {"round": round_, "status": "error", "error": "stub",
                                                                  "contention": {"contended": False}})
    runner.run_suite(TINY, tmp_path / "out", log=lambda *a: None)
    assert not stale.exists() and live.exists() and foreign.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_is_an_interruption_in_every_command(hang, sig):
    # Default dispositions, as a terminal gives: under nohup SIGHUP arrives ignored, and fwbench rightly keeps it so.
    proc = subprocess.Popen([sys.executable, "-m", "fwbench", "conformance", hang], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        assert wait_for(lambda: catches(proc.pid, sig), 60), f"fwbench never installed a {sig.name} handler"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == f"fwbench conformance: interrupted by {sig.name} (exit 130, as for Ctrl-C)"


def test_a_check_process_dies_with_the_bench_that_started_it(hang, deadline):
    stand_in = subprocess.Popen([sys.executable, "-c", f"from fwbench.harness.bench import checks; "
                                 f"checks.conformance({hang!r}, 'cpu')"], cwd=ROOT)
    module = hang.split(":")[0]
    try:
        check = wait_for(lambda: next((pid for pid, (ppid, cmd) in processes().items()
                                       if ppid == stand_in.pid and module in cmd), None), 60)
        assert check, "no conformance process started"
    finally:
        stand_in.kill()
    stand_in.wait()
    assert wait_for(lambda: check not in processes(), 15), "the conformance process outlived its bench"


def test_a_hung_plugin_is_stopped_and_recorded_as_timed_out(hang, monkeypatch, deadline):
    module = hang.split(":")[0]
    monkeypatch.setitem(checks.TIMEOUT_S, "conformance", 3)
    verdict = checks.conformance(hang, "cpu")
    assert not verdict["passed"] and verdict["error"] == "fwbench conformance timed out after 3 s"
    monkeypatch.setitem(checks.TIMEOUT_S, "agree", 3)
    assert checks.agreement("mlp", ["numpy", hang], "cpu") == {"error": "fwbench agree timed out after 3 s"}
    cell = cells(replace(TINY, backends=(hang,), cell_timeout_s=3))[0]
    record = runner.run_cell(cell, 0)
    assert record["status"] == "error" and record["error"] == "cell process timed out after 3 s"
    assert not survivors(module)


def test_a_hung_gpu_probe_is_stopped_and_the_bench_goes_on(tmp_path, monkeypatch, capsys, deadline):
    sleep = f"sleep {600_000 + secrets.randbelow(10**5)}"  # a command line no other process has
    sleeper = tmp_path / "python"
    sleeper.write_text(f"#!/bin/sh\nexec {sleep}\n")
    sleeper.chmod(0o755)
    monkeypatch.setattr(command.sys, "executable", str(sleeper))
    monkeypatch.setitem(checks.TIMEOUT_S, "backends", 1)
    start = time.monotonic()
    assert command.devices_seen(["numpy"]) is None  # no answer: each cell says for itself why it cannot use cuda
    assert time.monotonic() - start < 10 and not survivors(sleep)
    err = capsys.readouterr().err
    assert err == "fwbench bench: warning: could not check for a GPU up front (fwbench backends timed out after 1 s)\n"


def bench_json(capsys) -> tuple[dict, str]:
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err


def test_bench_exits_1_naming_each_failed_cell_after_running_the_whole_matrix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "calibrate", dict)
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    code = main(["bench", "--suite", "quick", "--backends", "micrograd,numpy", "--models", "mlp", "--repeat", "1",
                 "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    doc = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert doc["status"] == "complete" and [c["status"] for c in doc["cells"]] == ["error", "ok"]  # numpy still ran
    assert "micrograd mlp b64 cpu" in err and "numpy mlp" not in err and "Traceback" not in err
    assert "1 of 2 cells failed" in err


def test_bench_json_gives_the_path_status_and_failed_cells_as_the_last_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "calibrate", dict)
    timed_out = {"error": "fwbench agree timed out after 9 s"}
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: timed_out)
    monkeypatch.setattr(runner, "run_cell", lambda cell, round_: {"round": round_, "status": "error", "error": "boom",
                                                                  "contention": {"contended": False}})
    argv = ["bench", "--suite", "quick", "--backends", "numpy", "--models", "mlp", "--repeat", "1", "--json"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1
    summary, err = bench_json(capsys)
    assert summary["status"] == "complete" and Path(summary["path"]).parent == tmp_path / "a"
    assert summary["failed"] == [{"cell": "numpy mlp b64 cpu", "error": "boom"}]
    assert summary["failed_checks"] == [{"check": "agreement mlp", "error": "fwbench agree timed out after 9 s"}]
    assert json.loads(Path(summary["path"]).read_text())["status"] == "complete"

    def interrupt(cell, round_):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_cell", interrupt)
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    assert main([*argv, "--out", str(tmp_path / "b")]) == 130
    summary, err = bench_json(capsys)
    assert summary["status"] == "interrupted" and Path(summary["path"]).parent == tmp_path / "b"
    assert err.strip().splitlines()[-1] == "fwbench bench: interrupted"


def test_the_gpu_suite_is_refused_up_front_where_no_backend_sees_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(command, "run_suite", lambda *a, **k: pytest.fail("cells ran"))
    cpu_only = {n: {"name": n, "status": "ok", "devices": ["cpu"]} for n in ("numpy", "torch", "flax")}
    monkeypatch.setattr(command, "devices_seen", lambda names: cpu_only)
    for argv in (["--suite", "gpu"], ["--suite", "quick", "--device", "cuda"]):
        assert main(["bench", *argv, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "no backend here sees a GPU (numpy: cpu; torch: cpu; flax: cpu)" in err
    assert not list(tmp_path.iterdir())
    # one backend that sees a GPU is enough: the others record in their cells why they cannot run
    monkeypatch.setattr(command, "devices_seen", lambda names: {**cpu_only, "torch": {**cpu_only["torch"],
                                                                                "devices": ["cpu", "cuda"]}})
    monkeypatch.setattr(command, "run_suite", finished)
    assert main(["bench", "--suite", "gpu", "--out", str(tmp_path)]) == 0


def finished(suite, out):
    """A run_suite stand-in: a complete run with no cells."""
    path = out / "bench-stub.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "complete", "cells": [], "agreement": {}, "conformance": {}}))
    return path


def test_the_gpu_suite_is_refused_on_this_machine_when_it_has_no_gpu(tmp_path, capsys):
    seen = command.devices_seen(["numpy", "torch", "flax"])  # the gpu suite's backends
    if seen is None or any("cuda" in row["devices"] for row in seen.values()):
        pytest.skip("a backend sees a GPU here")
    assert main(["bench", "--suite", "gpu", "--out", str(tmp_path)]) == 2
    assert "--suite gpu runs on cuda, but no backend here sees a GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

"""`fwbench bench`: cells in fresh processes, a self-describing results file, failures and interruptions kept."""
import json
from dataclasses import replace

import pytest

from fwbench import models
from fwbench.backends.engine import parallel as engine_parallel
from fwbench.harness.bench import checks, limits, results, runner
from fwbench.harness.bench.suite import PRESETS, cells, rounds
from fwbench.harness.cli import main
from fwbench.harness.documents import RESULTS
from fwbench.harness.reporting.load import load

TINY = replace(PRESETS["quick"], name="tiny", models=("mlp",), backends=("numpy", "micrograd"),
               timed_steps=5, warmup_steps=1, min_timed_s=0.0, limit=640, repeat=3, conformance=True)


def run_cell(cell):
    """One run of a cell, with the cell's facts merged in as the runner keeps them."""
    record = runner.run_cell(cell, 0)
    return {**record.pop("info", {}), **record}


def test_presets_cover_the_matrix_and_train_each_cell_once():
    quick = cells(PRESETS["quick"])
    assert {(c.backend, c.model) for c in quick} == {(b, m) for b in PRESETS["quick"].backends for m in ("cnn", "mlp")}
    default = PRESETS["default"]
    assert "flax" in default.backends and "flax@scan-tuned" in default.backends  # stock beside tuned
    assert [c.train for c in cells(default) if (c.backend, c.model) == ("flax", "cnn")] == [False]  # timing only
    full = cells(PRESETS["full"])
    assert {c.batch_size for c in full} == {64, 512}
    # the recipe runs once per backend (mode) and model, at its own batch size
    assert sum(c.train for c in full) == 2 * len(PRESETS["full"].backends)


def test_rounds_visit_every_cell_once_in_a_seeded_order():
    plan = rounds(replace(TINY, repeat=4, order_seed=3), 5)
    assert len(plan) == 4 and all(sorted(order) == list(range(5)) for order in plan)
    assert plan == rounds(replace(TINY, repeat=4, order_seed=3), 5)
    assert len({tuple(order) for order in plan}) > 1 and plan != rounds(replace(TINY, repeat=4, order_seed=4), 5)


def test_results_file_is_self_describing_and_keeps_a_failed_cell(tmp_path):
    path = runner.run_suite(TINY, tmp_path, log=lambda *a: None)
    doc = load(path)  # checked against the JSON Schema
    assert doc["schema"] == RESULTS and doc["status"] == "complete" and doc["finished"]
    assert {"cpu", "cores", "ram_gb", "gpu", "os", "python"} <= set(doc["machine"])
    assert set(doc["git"]) == {"commit", "dirty"}
    assert doc["metrics"]["step_ms"]["unit"] == "ms" and "synchronize" in doc["metrics"]["step_ms"]["how"]
    assert {"start", "end"} == set(doc["calibration"]) and doc["calibration"]["start"]["matmul_gflops"] > 0
    assert doc["conformance"]["numpy"]["passed"]
    ok, failed = doc["cells"]
    assert ok["backend"] == "numpy" and ok["status"] == "ok" and ok["conformance"] == "passed"
    runs = [r for r in ok["runs"] if r["status"] == "ok"]
    assert len(runs) >= 3 and {0, 1, 2} <= {r["round"] for r in runs} <= {0, 1, 2, 3}  # 3: a contended run again
    assert [r["trained"] for r in runs].count(True) == 1
    assert all(len(r["samples"]["step_ms"]) == 5 and "others_cpu" in r["contention"] for r in runs)
    assert all("steal" in r["contention"]["timed"] for r in runs)  # the cell's own reading over its timed steps
    m, unc = ok["metrics"], ok["uncertainty"]["step_ms"]
    assert m["step_ms"] > 0 and m["images_per_s"] == pytest.approx(64 / m["step_ms"] * 1e3)
    raw = json.loads(path.read_text())["cells"][0]["metrics"]  # stored by the run itself, not derived on load
    assert raw["step_gflop"] == 64 * 455_258 / 1e9  # tests/test_flops.py counts the mlp: 455,258 FLOPs an image
    assert raw["gflops"] == pytest.approx(raw["step_gflop"] / m["step_ms"] * 1e3)
    peak = max(doc["calibration"][k]["matmul_gflops"] for k in ("start", "end"))
    assert raw["mfu"] == pytest.approx(raw["gflops"] / peak) and raw["flop_limited_ms"] == pytest.approx(
        raw["step_gflop"] / peak * 1e3)
    assert unc["n"] == len(results.used_runs(ok)) and unc["ci"][0] <= m["step_ms"] <= unc["ci"][1]
    assert 0.2 < m["test_accuracy"] <= 1 and 50 < m["peak_rss_mb"] <= m["train_peak_rss_mb"] + 1
    if engine_parallel.PROCESSES and engine_parallel.cores() > 1:  # the engine's worker process: in the peak too
        assert len(raw["helpers_peak_rss_mb"]) == engine_parallel.cores() - 1
        assert all(10 < mb < m["peak_rss_mb"] / 2 for mb in raw["helpers_peak_rss_mb"])
    assert m["gpu_peak_mb"] is None and m["epoch_s"] is None and m["first_epoch_s"] > 0  # one epoch: no epoch_s
    assert m["agreement_worst_rel_l2"] < 1e-5
    assert ok["curves"]["loss"] and len(ok["curves"]["accuracy"]) == 2 and ok["filters"] is None  # mlp: no conv
    assert ok["recipe"]["optimizer"]["name"] == "adam" and ok["train_images"] == 640
    # micrograd refuses the mlp: recorded with its reason once, not retried, and the run still completed
    assert failed["status"] == "error" and "micrograd" in failed["error"] and "\n" not in failed["error"]
    assert len(failed["runs"]) == 1
    assert doc["agreement"]["mlp"]["worst_rel_l2"]["numpy"] < 1e-5
    assert any(n.startswith("micrograd skipped: ") for n in doc["agreement"]["mlp"]["notes"])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_interrupted_run_keeps_finished_cells(tmp_path, monkeypatch):
    real, calls = runner.run_cell, []

    def interrupt_second(cell, round_):
        calls.append(cell.batch_size)
        if len(set(calls)) == 2:  # the second cell (a contended first one may have run twice)
            raise KeyboardInterrupt
        return real(cell, round_)

    monkeypatch.setattr(runner, "run_cell", interrupt_second)
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(replace(TINY, backends=("numpy",), batch_sizes=(64, 32), conformance=False, repeat=1),
                         tmp_path, log=lambda *a: None)
    doc = load(next(tmp_path.glob("bench-*.json")))
    assert doc["status"] == "interrupted" and [c["status"] for c in doc["cells"]].count("ok") == 1
    assert [c["status"] for c in doc["cells"]].count("pending") == 1


def test_a_fused_mode_is_timed_per_call_and_trains_in_segments():
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    cell = cells(replace(TINY, backends=("flax@scan",)))[0]
    record = run_cell(cell)
    assert record["status"] == "ok", record["error"]
    assert (record["mode"], record["fused"]) == ("scan", True)
    m = record["metrics"]
    assert m["steps_per_call"] == 5 and m["step_ms"] > 0 and 0 <= m["compile_s"] < m["first_step_s"]
    assert 0.2 < m["test_accuracy"] <= 1 and len(record["curves"]["accuracy"]) == 2
    assert [p[0] for p in record["curves"]["loss"]] == [5, 10]  # 640 images at 64: two segments of five steps


def test_step_timing_reuses_full_batches_when_an_epoch_has_too_few():
    cell = cells(replace(TINY, backends=("numpy",), batch_sizes=(256,), train=False))[0]  # 640 images: 2 full + 1
    record = run_cell(cell)
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["steps"] == 5 and record["metrics"]["step_ms"] > 0


def test_cell_process_crash_is_recorded(monkeypatch):
    cell = cells(replace(TINY, backends=("numpy",)))[0]
    monkeypatch.setattr(runner.sys, "executable", "/bin/false")
    record = run_cell(cell)
    assert record["status"] == "error" and record["error"].startswith("cell process exit 1")
    assert record["contention"]["contended"] in (True, False)


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--backends", "numpy,caffe"], "unknown backend 'caffe'"),
    (["bench", "--models", "resnet"], "unknown model 'resnet'"),
    (["bench", "--batch-sizes", "64,big"], "argument --batch-sizes: takes positive whole numbers"),
    (["bench", "--backends", "numpy@fast"], "backend 'numpy' has no mode 'fast'"),
    (["bench", "--backends", "numpy@"], "nothing after '@'"),
    (["bench", "--suite", "huge"], "invalid choice: 'huge'"),
])
def test_bad_options_fail_before_running(capsys, argv, needle, tmp_path):
    try:
        code = main([*argv, "--out", str(tmp_path)])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_plugin_that_fails_conformance_is_not_benched_unless_allowed(tmp_path, monkeypatch):
    plugin = "fwbench.backends.numpy_backend:NumpyBackend"  # a module path: not built in, so it is checked first
    monkeypatch.setattr(runner, "conformance", lambda name, device: {"passed": False, "failed": ["backward/relu"]})
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    suite = replace(TINY, backends=(plugin,), repeat=1)
    doc = json.loads(runner.run_suite(suite, tmp_path / "a", log=lambda *a: None).read_text())
    (cell,) = doc["cells"]
    assert cell["status"] == "error" and "failed the conformance kit (backward/relu)" in cell["error"]
    assert doc["conformance"][plugin]["passed"] is False
    doc = json.loads(runner.run_suite(replace(suite, allow_nonconformant=True), tmp_path / "b",
                                      log=lambda *a: None).read_text())
    (cell,) = doc["cells"]
    assert cell["status"] == "ok" and cell["conformance"] == "failed"


def test_a_conformant_plugin_is_checked_in_a_fresh_process_and_marked():
    verdict = checks.conformance("fwbench.backends.numpy_backend:NumpyBackend", "cpu")
    assert verdict["passed"] and verdict["failed"] == [] and verdict["source"] == "module path"
    assert verdict["mode"] is None and verdict["seconds"] > 0
    verdict = checks.conformance("fwbench.backends.numpy_backend:NumpyBackend@fast", "cpu")  # a mode it lacks: one line
    assert not verdict["passed"] and "has no mode 'fast'" in verdict["error"]


def test_device_cuda_without_a_gpu_is_refused_before_any_cell(capsys, tmp_path):
    code = main(["bench", "--backends", "micrograd", "--device", "cuda", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda: backend 'micrograd' cannot use a GPU here (it sees: cpu)" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    assert main(["bench", "--suite", "gpu", "--backends", "micrograd", "--out", str(tmp_path)]) == 2  # the preset's
    assert "--device cuda: backend 'micrograd' cannot use a GPU here" in capsys.readouterr().err


def test_contended_runs_are_measured_again_only_where_clean_runs_are_missing():
    def record(*contended, ok=True):
        return {"runs": [{"status": "ok" if ok else "error", "contention": {"contended": c}} for c in contended]}
    cells_ = [record(False, True, True, False), record(False, True, False, False), record(True),
              record(True, True, True, True), record(True, ok=False)]
    assert runner.remeasure(cells_, 4) == [(0, 1), (2, 1), (3, 3)]
    assert runner.remeasure(cells_, 1) == [(2, 1), (3, 1)]


def test_a_cells_flop_rate_follows_from_its_step_time():
    mlp = models.get("mlp")
    assert limits.flop_figures(mlp, 64, 2.5) == {"step_gflop": 0.029136512, "gflops": pytest.approx(11.6546048)}
    runs = [{"status": "ok", "metrics": {"step_ms": ms, "step_gflop": 0.03, "gflops": 0.03 / ms * 1e3},
             "contention": {"contended": False}} for ms in (2.0, 4.0, 3.0, 5.0)]
    cell = {"batch_size": 64, "runs": runs}
    results.summarize(cell)
    # the cell's rate is its FLOPs over its median step (3.5 ms), as images/s is, not a median of the runs' rates
    assert cell["metrics"]["gflops"] == pytest.approx(0.03 / 3.5 * 1e3)
    assert cell["metrics"]["step_gflop"] == 0.03 and "step_gflop" not in cell["uncertainty"]


def _limits_doc(calibration: dict) -> dict:
    def cell(device, dtype="float32", status="ok"):
        metrics = {"step_ms": 10.0, "step_gflop": 0.5, "gflops": 50.0} if status == "ok" else {}
        return {"backend": "numpy", "model": "cnn", "device": device, "dtype": dtype, "status": status,
                "metrics": metrics}
    return {"calibration": calibration, "cells": [cell("cpu"), cell("cuda"), cell("cpu", "float64"),
                                                   cell("cpu", status="error")]}


def test_mfu_and_the_flop_limited_step_from_the_calibration():
    doc = _limits_doc({"start": {"matmul_gflops": 190.0}, "end": {"matmul_gflops": 200.0}})
    assert limits.peak_gflops(doc) == 200.0  # the faster calibration: the machine's best
    limits.fill(doc)
    cpu, cuda, double, failed = (c["metrics"] for c in doc["cells"])
    assert cpu["mfu"] == 0.25 and cpu["flop_limited_ms"] == 2.5  # 50 of 200 GFLOP/s; 0.5 GFLOP at 200 GFLOP/s
    # the CPU's float32 matmul is no peak for a GPU or for float64: no fraction, but the rate stays
    assert cuda["mfu"] is None and cuda["flop_limited_ms"] is None and cuda["gflops"] == 50.0
    assert double["mfu"] is None and failed == {}
    cpu["mfu"] = 0.3
    limits.fill(doc)  # what a run stored is kept
    assert cpu["mfu"] == 0.3
    for calibration in ({}, {"start": {"matmul_gflops": None}}):
        doc = _limits_doc(calibration)
        limits.fill(doc)
        assert limits.peak_gflops(doc) is None and "mfu" not in doc["cells"][0]["metrics"]

"""Results are never lost or overwritten: unique names, no writing over inputs, atomic writes, a fallback file."""
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import results_fixture
from fwbench import models
from fwbench.harness import atomic, commands, summary
from fwbench.harness.agreement.command import dump
from fwbench.harness.bench import results, runner
from fwbench.harness.bench.suite import PRESETS
from fwbench.harness.cli import main
from fwbench.harness.reporting import render
from fwbench.harness.reporting.load import find, load

ROOT = Path(__file__).resolve().parent.parent
FIXED = time.struct_time((2026, 12, 2, 6, 17, 28, 2, 336, 0))
SUITE = replace(PRESETS["quick"], name="t", models=("mlp",), backends=("numpy",), repeat=2, conformance=False)


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every timestamp in the same second, as for two runs started together."""
    real = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: real(fmt, FIXED))


@pytest.fixture
def fake_cells(monkeypatch):
    """A suite's run without processes: every cell run returns at once."""
    def run_cell(cell, round_, *rest, **kw):
        return {"round": round_, "trained": cell.train, "started": "now", "status": "ok", "error": None,
                "metrics": {"step_ms": 1.0 + round_}, "contention": {"contended": False},
                "info": {"framework_version": f"fake {cell.backend}", "device": "cpu"}}
    monkeypatch.setattr(runner, "run_cell", run_cell)
    monkeypatch.setattr(runner, "agreement", lambda model, names, device: {})
    monkeypatch.setattr(runner, "calibrate", lambda: {"matmul_gflops": 1.0})
    monkeypatch.setenv("XDG_STATE_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "unused-state"))


def quiet(*args):
    pass


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# 1. Two runs into one directory in the same second keep both files.

def test_two_claims_in_one_second_get_two_files(tmp_path):
    name = atomic.stamped("bench-quick", ".json", clock=lambda: FIXED)
    first = atomic.claim(tmp_path, name, b"first")
    second = atomic.claim(tmp_path, name, b"second")
    assert first.name == "bench-quick-20261202-061728.json" and second.name == "bench-quick-20261202-061728-2.json"
    assert first.read_bytes() == b"first" and second.read_bytes() == b"second"
    assert {p.name for p in tmp_path.iterdir()} == {first.name, second.name}  # no temp file left


def test_claims_without_hard_links_are_exclusive_too(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")  # as on file systems without hard links
    monkeypatch.setattr(os, "link", no_links)
    paths = [atomic.claim(tmp_path, "compare-mlp-20261202-061728.json", str(i).encode()) for i in range(3)]
    assert [p.read_text() for p in paths] == ["0", "1", "2"] and len(set(paths)) == 3
    assert len(list(tmp_path.iterdir())) == 3


def test_two_bench_runs_in_one_second_keep_both(tmp_path, frozen_clock, fake_cells):
    a = runner.run_suite(SUITE, tmp_path, log=quiet)
    b = runner.run_suite(replace(SUITE, backends=("micrograd",)), tmp_path, log=quiet)
    assert a != b and len(list(tmp_path.glob("bench-*.json"))) == 2
    assert [c["backend"] for c in json.loads(a.read_text())["cells"]] == ["numpy"]
    assert [c["backend"] for c in json.loads(b.read_text())["cells"]] == ["micrograd"]
    assert find([str(tmp_path)])[-1] == b  # the later run reads as the newer


def test_two_compare_runs_in_one_second_keep_both(tmp_path, frozen_clock):
    a = summary.write({"n": 1}, tmp_path, "compare-mlp")
    b = summary.write({"n": 2}, tmp_path, "compare-mlp")
    assert a != b and json.loads(a.read_text()) == {"n": 1} and json.loads(b.read_text()) == {"n": 2}


# 2. report never writes over its input or any results file.

@pytest.mark.parametrize("form", ["md", "csv", "html", "pytest-benchmark"])
def test_report_refuses_to_overwrite_its_input(tmp_path, capsys, form):
    path = results_fixture.write(tmp_path / "r.json")
    before = path.read_bytes()
    assert main(["report", str(path), "--format", form, "--out", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "results" in line and "give another file" in line
    assert path.read_bytes() == before


def test_report_refuses_to_overwrite_another_results_file(tmp_path, capsys):
    path, other = results_fixture.write(tmp_path / "r.json"), results_fixture.write(tmp_path / "other.json")
    before = other.read_bytes()
    assert main(["report", str(path), "--out", str(other)]) == 2
    assert "is a fwbench results file" in one_line(capsys.readouterr().err) and other.read_bytes() == before


def test_report_compare_refuses_to_overwrite_either_run(tmp_path, capsys):
    a, b = results_fixture.write(tmp_path / "a.json"), results_fixture.write(tmp_path / "b.json")
    before = a.read_bytes()
    assert main(["report", "--compare", str(a), str(b), "--out", str(tmp_path / "." / "a.json")]) == 2
    one_line(capsys.readouterr().err)
    assert a.read_bytes() == before


def test_report_still_replaces_an_earlier_report(tmp_path, capsys):
    path = results_fixture.write(tmp_path / "r.json")
    out = tmp_path / "report.md"
    out.write_text("old report\n")
    assert main(["report", str(path), "--out", str(out)]) == 0
    assert out.read_text().startswith("# fwbench report")


# 3. Every file is replaced in one step: a reader that opened the old file reads all of the old file.

def _reader_keeps_old(path: Path, write) -> None:
    path.write_text("old")
    with open(path) as reader:
        write()
        assert reader.read() == "old"  # written in place, the reader would see the new text or a torn one
    assert path.read_bytes() != b"old"


def test_report_out_is_written_atomically(tmp_path):
    src = results_fixture.write(tmp_path / "r.json")
    _reader_keeps_old(tmp_path / "report.md", lambda: main(["report", str(src), "--out", str(tmp_path / "report.md")]))


def test_compare_markdown_is_written_atomically(tmp_path, monkeypatch, frozen_clock):
    md = tmp_path / "compare-mlp-20261202-061728.md"
    _fake_compare(monkeypatch)
    # A stale table under the name the run will claim for its JSON.
    _reader_keeps_old(md, lambda: main(["compare", "--model", "mlp", "--backends", "numpy", "--out", str(tmp_path)]))


def test_agree_dump_is_written_atomically(tmp_path):
    grads = {"0.weight": np.ones((2, 2))}
    report = SimpleNamespace(runs={"numpy": SimpleNamespace(grads=grads, loss=0.5)})
    doc = {"schema": "fwbench.agree/1", "model": "m", "dtype": "float64", "batch_size": 2, "seed": 0, "data": "d",
           "tolerance": {}, "backends": {}}
    for name in ("summary.json", "grads_numpy.npz", "params.npz"):
        _reader_keeps_old(tmp_path / name, lambda: dump(tmp_path, models.get("mlp"), grads, np.zeros(2), np.zeros(2),
                                                         report, doc, None))
    assert json.loads((tmp_path / "summary.json").read_text())["losses"] == {"numpy": 0.5}
    assert np.load(tmp_path / "grads_numpy.npz")["0.weight"].sum() == 4
    assert not list(tmp_path.glob(".*"))


def test_a_device_or_pipe_is_written_through_not_replaced(tmp_path):
    out = tmp_path / "to-null"
    out.symlink_to(os.devnull)  # as --out /dev/stdout is; replaced, the link would become a plain file
    atomic.atomic_write(out, b"report")
    assert out.is_symlink() and not list(tmp_path.glob(".*"))


# 4. When --out stops being writable mid-run, the run goes on into a fallback file, says where, and exits non-zero.

def _failing_after_first(monkeypatch, directory: Path) -> list:
    real, calls = results.save, []

    def save(doc, path):
        calls.append(path)
        if Path(path).parent == directory and len(calls) > 1:
            raise PermissionError(13, "Permission denied", str(path))
        real(doc, path)
    monkeypatch.setattr(results, "save", save)
    return calls


def test_unwritable_out_mid_run_keeps_every_cell_in_a_fallback_file(tmp_path, monkeypatch, fake_cells):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _failing_after_first(monkeypatch, tmp_path / "out")
    said = []
    with pytest.raises(OSError) as caught:
        runner.run_suite(SUITE, tmp_path / "out", log=said.append)
    kept = list((tmp_path / "state" / "fwbench" / "results").glob("bench-t-*.json"))
    assert len(kept) == 1 and str(kept[0]) in str(caught.value) and "\n" not in str(caught.value)
    doc = json.loads(kept[0].read_text())
    assert doc["status"] == "complete" and all(len(c["runs"]) == 2 for c in doc["cells"])
    assert [line for line in said if str(kept[0]) in line and "Permission denied" in line]


def test_bench_exits_non_zero_naming_the_fallback_file(tmp_path, monkeypatch, capsys, fake_cells):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _failing_after_first(monkeypatch, tmp_path / "out")
    code = main(["bench", "--suite", "quick", "--backends", "numpy", "--models", "mlp", "--repeat", "1",
                 "--out", str(tmp_path / "out")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and str(tmp_path / "state") in line and "Permission denied" in line


def _break_after_first_run(monkeypatch, out: Path, breaking) -> None:
    real = runner.run_cell

    def run_cell(cell, round_, *rest, **kw):
        breaking(out)
        return real(cell, round_, *rest, **kw)
    monkeypatch.setattr(runner, "run_cell", run_cell)


def _replace_by_file(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
        out.write_text("not a directory any more")


def test_out_replaced_by_a_file_mid_run(tmp_path, monkeypatch, fake_cells):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _break_after_first_run(monkeypatch, tmp_path / "out", _replace_by_file)
    with pytest.raises(OSError, match="state"):
        runner.run_suite(SUITE, tmp_path / "out", log=quiet)
    kept = list((tmp_path / "state").rglob("bench-t-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["status"] == "complete"


def test_out_removed_mid_run_is_made_again(tmp_path, monkeypatch, fake_cells):
    _break_after_first_run(monkeypatch, tmp_path / "out", lambda out: shutil.rmtree(out, ignore_errors=True))
    path = runner.run_suite(SUITE, tmp_path / "out", log=quiet)
    assert path.parent == tmp_path / "out" and json.loads(path.read_text())["status"] == "complete"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into a 0500 directory")
def test_out_made_read_only_mid_run(tmp_path, monkeypatch, fake_cells):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _break_after_first_run(monkeypatch, tmp_path / "out", lambda out: out.chmod(0o500))
    try:
        with pytest.raises(OSError, match="state"):
            runner.run_suite(SUITE, tmp_path / "out", log=quiet)
    finally:
        (tmp_path / "out").chmod(0o700)
    assert len(list((tmp_path / "state").rglob("bench-t-*.json"))) == 1


def test_compare_that_cannot_write_its_results_keeps_them(tmp_path, monkeypatch, capsys, frozen_clock):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _fake_compare(monkeypatch)
    real = atomic.claim

    def claim(directory, name, data, **kw):
        if Path(directory) == tmp_path / "out":
            raise PermissionError(13, "Permission denied", str(directory))
        return real(directory, name, data, **kw)
    monkeypatch.setattr(atomic, "claim", claim)
    assert main(["compare", "--model", "mlp", "--backends", "numpy", "--out", str(tmp_path / "out")]) == 2
    line = one_line(capsys.readouterr().err)
    kept = list((tmp_path / "state").rglob("compare-mlp-*.json"))
    assert len(kept) == 1 and str(kept[0]) in line and json.loads(kept[0].read_text())["cells"][0]["backend"] == "numpy"


# 5. A file where a directory is expected, or the reverse, is named in one line before anything runs.

def _never(*args, **kw):
    raise AssertionError("ran before checking --out")


def test_bench_out_that_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_cell", _never)
    monkeypatch.setattr(runner, "calibrate", _never)
    file = tmp_path / "hostname"
    file.write_text("x")
    assert main(["bench", "--suite", "quick", "--backends", "numpy", "--models", "mlp", "--out", str(file)]) == 2
    assert one_line(capsys.readouterr().err) == f"fwbench bench: error: --out {file} is a file; give a directory"


def test_bench_out_under_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "calibrate", _never)
    (tmp_path / "f").write_text("x")
    assert main(["bench", "--suite", "quick", "--backends", "numpy", "--models", "mlp",
                 "--out", str(tmp_path / "f" / "sub")]) == 2
    assert one_line(capsys.readouterr().err).endswith(f"--out {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file, "
                                                      "not a directory")


def test_compare_out_that_is_a_file_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(commands, "_train_one", _never)
    monkeypatch.setattr(commands, "mnist_for", lambda *a, **kw: None)
    file = tmp_path / "hostname"
    file.write_text("x")
    assert main(["compare", "--model", "mlp", "--backends", "numpy", "--out", str(file)]) == 2
    assert one_line(capsys.readouterr().err) == f"fwbench compare: error: --out {file} is a file; give a directory"


def test_agree_dump_that_is_a_file_fails_before_computing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fwbench.harness.agreement.command.init_params", _never)
    file = tmp_path / "hostname"
    file.write_text("x")
    assert main(["agree", "--model", "mlp", "--backends", "numpy", "--dump", str(file)]) == 2
    assert one_line(capsys.readouterr().err) == f"fwbench agree: error: --dump {file} is a file; give a directory"


def test_report_out_that_is_a_directory_or_under_a_file(tmp_path, capsys):
    src = results_fixture.write(tmp_path / "r.json")
    assert main(["report", str(src), "--out", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err).endswith(f"--out {tmp_path} is a directory; give a file name")
    assert main(["report", str(src), "--out", str(src / "report.md")]) == 2
    assert one_line(capsys.readouterr().err).endswith(f"--out {src / 'report.md'}: {src} is a file, not a directory")


# 6. The overhead check is a stage of the suite, written into the run's own file, and nothing else is rewritten.

def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "overhead.py"
    path.write_text("import json, sys\n" + body)
    return path


def test_the_overhead_stage_writes_into_its_own_run(tmp_path, monkeypatch, fake_cells):
    figures = {"fwbench_step_ms": 6.7, "plain_step_ms": 6.6, "ratio": 1.015, "ratio_each": [1.0, 1.03]}
    script = _script(tmp_path, "args = sys.argv[1:]\nprint('a table')\nprint(json.dumps({'overhead': {n: dict(%r, "
                               "argv=args) for n in args[args.index('--frameworks') + 1].split(',')}}))\n" % figures)
    monkeypatch.setattr("fwbench.harness.bench.overhead.SCRIPT", script)
    other = tmp_path / "out" / "bench-default-20300101-000000.json"  # a newer run's file that must stay as it is
    other.parent.mkdir()
    other.write_text("{}")
    suite = replace(SUITE, overhead=("torch", "flax@scan-tuned"), overhead_rounds=2, overhead_steps=7)
    doc = json.loads(runner.run_suite(suite, tmp_path / "out", log=quiet).read_text())
    assert set(doc["overhead"]) == {"torch", "flax@scan-tuned"} and doc["overhead"]["torch"]["ratio"] == 1.015
    argv = doc["overhead"]["torch"]["argv"]
    assert argv[argv.index("--rounds") + 1] == "2" and argv[argv.index("--steps") + 1] == "7" and "--json" in argv
    assert other.read_text() == "{}"


def test_a_failed_overhead_stage_is_recorded_and_the_run_completes(tmp_path, monkeypatch, fake_cells):
    monkeypatch.setattr("fwbench.harness.bench.overhead.SCRIPT", _script(tmp_path, "sys.exit('no torch here')\n"))
    path = runner.run_suite(replace(SUITE, overhead=("torch",)), tmp_path, log=quiet)
    doc = load(path)  # still a valid results file
    assert doc["status"] == "complete" and "no torch here" in doc["overhead"]["torch"]["error"]
    assert "| torch | — | — | — |" in render([str(path)])  # the report's overhead table shows it as not measured


def test_a_hung_overhead_stage_is_stopped(tmp_path, monkeypatch):
    from fwbench.harness.bench import overhead
    monkeypatch.setattr(overhead, "SCRIPT", _script(tmp_path, "import time\ntime.sleep(60)\n"))
    started = time.monotonic()
    found = overhead.measure(("torch",), 1, 1, "cpu", timeout_s=1)
    assert found["torch"]["error"] == "benchmarks/overhead.py timed out after 1 s" and time.monotonic() - started < 30


def test_the_default_suite_measures_the_overhead_and_quick_does_not():
    assert PRESETS["default"].overhead == ("torch", "flax@scan-tuned") and not PRESETS["quick"].overhead
    assert "overhead.py" not in (ROOT / "Makefile").read_text()  # no step after the run rewrites its file


def test_overhead_script_writes_only_its_own_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("overhead", None)
    import overhead as script
    bench = tmp_path / "bench-default-20261202-061728.json"
    bench.write_text('{"schema": "fwbench.results/2", "status": "complete"}')
    written = script.write(tmp_path, {"torch": {"ratio": 1.0}}, {"overhead": {"torch": {"ratio": 1.0}}})
    assert written == [p for p in tmp_path.glob("overhead-*.json")] and len(written) == 1
    assert bench.read_text() == '{"schema": "fwbench.results/2", "status": "complete"}'


def _fake_compare(monkeypatch):
    """compare without data or training: one numpy cell."""
    monkeypatch.setattr(commands, "mnist_for", lambda *a, **kw: None)
    cell = {"backend": "numpy", "model": "mlp", "framework_version": "numpy 2", "device": "cpu", "status": "ok",
            "metrics": {"test_accuracy": 0.9, "first_epoch_s": 1.0, "epoch_s": None, "epoch_s_each": [1.0]}}
    monkeypatch.setattr(commands, "_train_one", lambda *a, **kw: dict(cell))

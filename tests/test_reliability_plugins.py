"""One broken plugin never costs another backend its results: one line for it, the others kept (issue 11)."""
import json
import sys

import pytest

from fwbench import backends
from fwbench.harness.bench import checks
from fwbench.harness.cli import main

MODULE = "c1_broken_plugins"
CODE = '''
import sys
from fwbench.backends.base import BackendError
from fwbench.backends.numpy_backend import NumpyBackend


class Raises(NumpyBackend):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("constructor bug\\nsecond line of it")


class Exits(NumpyBackend):
    def __init__(self, *args, **kwargs):
        sys.exit(3)


class Interrupted(NumpyBackend):
    def __init__(self, *args, **kwargs):
        raise KeyboardInterrupt


class Refuses(NumpyBackend):
    def __init__(self, *args, **kwargs):
        raise BackendError("refuses every model")


class StepRaises(NumpyBackend):
    """Builds, then fails in every step it is asked for."""

    def loss_and_grads(self, x, y):
        raise ValueError("step bug")

    def train_step(self, batch):
        raise ValueError("step bug")
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The module of broken plugins on sys.path and on the PYTHONPATH of child processes."""
    (tmp_path / f"{MODULE}.py").write_text(CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", ":".join(p for p in (str(tmp_path), *sys.path) if p))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.delenv("FWBENCH_DEBUG", raising=False)
    yield lambda cls: f"{MODULE}:{cls}"
    sys.modules.pop(MODULE, None)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SHORT = ("--model", "mlp", "--limit", "64", "--batch-size", "32", "--epochs", "1", "--no-progress")


def train(capsys, backend):
    return run(capsys, "train", "--backend", backend, *SHORT)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_train_a_constructor_that_raises_is_one_line(capsys, plugins):
    code, _, err = train(capsys, plugins("Raises"))
    line = one_line(err)
    assert code == 2 and f"backend '{plugins('Raises')}' failed to build: RuntimeError: constructor bug" in line


def test_train_a_step_that_raises_is_one_line(capsys, plugins):
    code, _, err = train(capsys, plugins("StepRaises"))
    assert code == 2 and "ValueError: step bug" in one_line(err) and plugins("StepRaises") in err


def test_a_constructor_that_calls_sys_exit_is_one_line(capsys, plugins):
    code, _, err = train(capsys, plugins("Exits"))
    assert code == 2 and f"backend '{plugins('Exits')}' failed to build: SystemExit: 3" in one_line(err)


def test_ctrl_c_in_a_constructor_still_interrupts(capsys, plugins):
    code, _, err = train(capsys, plugins("Interrupted"))
    assert code == 130 and "interrupted" in one_line(err)


def test_fwbench_debug_raises_the_plugins_own_error(capsys, plugins, monkeypatch):
    monkeypatch.setenv("FWBENCH_DEBUG", "1")
    with pytest.raises(RuntimeError, match="constructor bug"):
        train(capsys, plugins("Raises"))


def test_compare_keeps_every_other_backend_and_exits_1(capsys, plugins, tmp_path):
    from fwbench.harness.reporting.load import load
    broken = [plugins("Raises"), plugins("StepRaises"), plugins("Exits")]
    code, out, err = run(capsys, "compare", "--backends", ",".join(["numpy", *broken]), *SHORT,
                         "--out", str(tmp_path / "out"))
    line = one_line(err)
    (path,) = (tmp_path / "out").glob("compare-mlp-*.json")
    assert code == 1 and all(name in line for name in broken) and str(path) in line
    cells = {c["backend"]: c for c in load(path)["cells"]}  # still valid results/2
    assert list(cells) == ["numpy", *broken]
    assert cells["numpy"]["status"] == "ok" and cells["numpy"]["metrics"]["test_accuracy"] is not None
    assert "RuntimeError: constructor bug" in cells[broken[0]]["error"]
    assert "ValueError: step bug" in cells[broken[1]]["error"] and "SystemExit: 3" in cells[broken[2]]["error"]
    assert all(cells[n]["status"] == "error" for n in broken)
    table = path.with_suffix(".md").read_text()
    assert "| numpy |" in table and f"| {broken[0]} |" in table and "failed" in table


def test_compare_interrupted_keeps_the_backends_that_finished(capsys, plugins, tmp_path):
    from fwbench.harness.reporting.load import load
    code, _, err = run(capsys, "compare", "--backends", f"numpy,{plugins('Interrupted')}", *SHORT,
                       "--out", str(tmp_path / "out"))
    (path,) = (tmp_path / "out").glob("compare-mlp-*.json")
    doc = load(path)
    assert code == 130 and str(path) in err and doc["status"] == "interrupted"
    assert [c["backend"] for c in doc["cells"]] == ["numpy"] and doc["cells"][0]["status"] == "ok"


def test_agree_a_constructor_that_raises_is_one_line(capsys, plugins):
    code, _, err = run(capsys, "agree", "--model", "tinycnn", "--backends", f"numpy,{plugins('Raises')}",
                       "--batch-size", "2")
    assert code == 2 and "RuntimeError: constructor bug" in one_line(err)


@pytest.mark.parametrize("cls,why", [("Raises", "RuntimeError: constructor bug"), ("Exits", "SystemExit: 3"),
                                     ("StepRaises", "ValueError: step bug")])
def test_agree_skip_unsupported_leaves_out_a_backend_that_fails(capsys, plugins, cls, why):
    code, out, _ = run(capsys, "agree", "--model", "tinycnn", "--backends", f"numpy,{plugins(cls)}",
                       "--batch-size", "2", "--skip-unsupported", "--json")
    doc = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and list(doc["backends"]) == ["numpy"] and "numpy~reference" in doc["table"]["loss"]
    assert any(n.startswith(f"{plugins(cls)} skipped: ") and why in n for n in doc["notes"]), doc["notes"]


def test_agree_skip_unsupported_leaves_a_failing_step_out_of_the_trajectory(capsys, plugins, monkeypatch):
    from fwbench.backends.numpy_backend import NumpyBackend
    calls = []

    def fails_late(self, batch):  # the shared batch passes; the second lockstep step fails
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("late step bug")
        return NumpyBackend.train_step(self, batch)
    import importlib
    module = importlib.import_module(MODULE)
    monkeypatch.setattr(module.StepRaises, "loss_and_grads", NumpyBackend.loss_and_grads)
    monkeypatch.setattr(module.StepRaises, "train_step", fails_late)
    code, out, _ = run(capsys, "agree", "--model", "tinycnn", "--backends", f"numpy,{plugins('StepRaises')}",
                       "--batch-size", "2", "--data", "random", "--steps", "3", "--skip-unsupported", "--json")
    doc = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and list(doc["trajectory"]["losses"]) == ["reference", "numpy"]
    assert any("late step bug" in n for n in doc["notes"]) and len(doc["trajectory"]["losses"]["numpy"]) == 3


def test_bench_agreement_keeps_the_other_backends(plugins):
    names = ["numpy", plugins("Raises"), plugins("StepRaises"), plugins("Exits")]
    doc = checks.agreement("tinycnn", names, "cpu")
    assert "error" not in doc, doc
    assert list(doc["worst_rel_l2"]) == ["numpy"] and doc["worst_rel_l2"]["numpy"] <= doc["tolerance"]
    assert all(any(n.startswith(f"{name} skipped: ") for n in doc["notes"]) for name in names[1:]), doc["notes"]


@pytest.fixture
def site(tmp_path, monkeypatch, plugins):
    """The broken plugins registered under the entry-point group by one distribution."""
    dist = tmp_path / "c1_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: c1-plugins\nVersion: 0.1\n")
    targets = {"c1raises": "Raises", "c1refuses": "Refuses", "c1exits": "Exits", "c1fine": "StepRaises"}
    lines = "".join(f"{name} = {MODULE}:{cls}\n" for name, cls in targets.items())
    (dist / "entry_points.txt").write_text(f"[{backends.GROUP}]\n{lines}")
    backends.plugins.cache_clear()
    yield
    backends.plugins.cache_clear()


def test_backends_listing_tries_one_small_build(capsys, site):
    code, out, _ = run(capsys, "backends", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["numpy"]["status"] == "ok"
    assert rows["c1raises"]["status"].startswith("broken: backend 'c1raises' failed to build: RuntimeError: ")
    assert rows["c1refuses"]["status"] == "broken: refuses every model"
    assert "SystemExit: 3" in rows["c1exits"]["status"]
    assert rows["c1fine"]["status"] == "ok"  # it builds; its steps are the conformance kit's to judge


def test_a_module_that_calls_sys_exit_on_import_is_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "c1_exits_on_import.py").write_text("import sys\nsys.exit(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = train(capsys, "c1_exits_on_import:Thing")
    assert code == 2 and "backend 'c1_exits_on_import:Thing' is broken: SystemExit: 4" in one_line(err)


@pytest.mark.parametrize("cls,why", [("Raises", "raised RuntimeError: constructor bug"),
                                     ("Exits", "raised RuntimeError: backend 'c1_broken_plugins:Exits' failed to "
                                               "build: SystemExit: 3")])
def test_conformance_fails_a_crashing_constructor_and_goes_on(capsys, plugins, cls, why):
    code, out, _ = run(capsys, "conformance", plugins(cls), "--json")
    checks = {c["name"]: c for c in json.loads(out.strip().splitlines()[-1])["checks"]}
    assert code == 1 and checks["forward/dense"]["status"] == "fail"  # a crash, not an honest refusal
    assert checks["forward/dense"]["detail"] == why

"""Issue 11, reporting and the terminal: bad results files, empty comparisons, --json, plain warnings, the bar."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import results_fixture
from fwbench.harness.bench import results
from fwbench.harness.cli import main
from fwbench.harness.progress import Progress
from fwbench.harness.reporting.load import ResultsError, load

ROOT = Path(__file__).resolve().parent.parent
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or style escape


def cli(capsys, *argv) -> tuple[int, str, str]:
    """fwbench's exit code, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str = "report") -> str:
    """The single error line; fails on a traceback or a second line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fwbench {command}: error: "), err
    return lines[0]


def _slower(doc: dict, index: int, factor: float) -> None:
    cell = doc["cells"][index]
    for run in cell["runs"]:
        run["metrics"]["step_ms"] *= factor
    results.summarize(cell)


# -- 1. metrics are checked against the schema on load -------------------------------------------------------

def _set(doc: dict, where: str, value) -> dict:
    """doc with the value at a dotted path such as cells.0.metrics.step_ms."""
    *parents, last = [int(p) if p.isdigit() else p for p in where.split(".")]
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value
    return doc


@pytest.mark.parametrize("where,value,field", [
    ("cells.0.metrics.step_ms", -1.0, "cells[0].metrics.step_ms"),
    ("cells.0.metrics.step_ms", "fast", "cells[0].metrics.step_ms"),
    ("cells.0.metrics.step_ms", 0.0, "cells[0].metrics.step_ms"),  # verdicts divide by it
    ("cells.0.uncertainty.step_ms.runs", [13.0, 0.0], "cells[0].uncertainty.step_ms.runs[1]"),
    ("cells.0.metrics.images_per_s", -5, "cells[0].metrics.images_per_s"),
    ("cells.0.metrics.peak_rss_mb", -640.0, "cells[0].metrics.peak_rss_mb"),
    ("cells.0.metrics.test_accuracy", 98.71, "cells[0].metrics.test_accuracy"),
    ("cells.0.metrics.test_accuracy", -0.1, "cells[0].metrics.test_accuracy"),
    ("cells.0.metrics.steps_per_call", 0, "cells[0].metrics.steps_per_call"),
    ("cells.0.metrics.epoch_s_each", [13.0, -1.0], "cells[0].metrics.epoch_s_each[1]"),
    ("cells.0.metrics.made_up", {"x": 1}, "cells[0].metrics.made_up"),
    ("cells.0.runs.2.metrics.step_ms", -13.0, "cells[0].runs[2].metrics.step_ms"),
    ("cells.0.uncertainty.step_ms.runs", [13.0, -13.0], "cells[0].uncertainty.step_ms.runs[1]"),
    ("cells.0.uncertainty.step_ms.ci", [-1.0, 13.0], "cells[0].uncertainty.step_ms.ci[0]"),
    ("cells.0.runs.0.samples.step_ms", [1.0, "x"], "cells[0].runs[0].samples.step_ms[1]"),
])
def test_impossible_metrics_are_refused_naming_the_file_and_the_field(tmp_path, where, value, field):
    path = results_fixture.write(tmp_path / "bad.json", _set(results_fixture.build(), where, value))
    with pytest.raises(ResultsError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {field}") and "\n" not in message
    assert message.endswith("(schema results-2.schema.json); cells[0] is numpy cnn")  # which cell, without counting


def test_report_of_a_negative_metric_is_one_line_exit_2_not_a_bold_best(tmp_path, capsys):
    path = results_fixture.write(tmp_path / "neg.json", _set(results_fixture.build(), "cells.0.metrics.step_ms", -1))
    code, out, err = cli(capsys, "report", path)
    assert code == 2 and out == "" and "cells[0].metrics.step_ms" in one_line_error(err)


def test_a_string_metric_names_the_field_not_a_format_code(tmp_path, capsys):
    path = results_fixture.write(tmp_path / "str.json", _set(results_fixture.build(), "cells.0.metrics.step_ms", "x"))
    code, _, err = cli(capsys, "report", path)
    line = one_line_error(err)
    assert code == 2 and "cells[0].metrics.step_ms" in line and "format code" not in line


def test_a_version_1_file_with_a_string_metric_is_refused_before_upgrading(tmp_path):
    doc = _set(results_fixture.build_v1(), "cells.0.metrics.step_ms", "fast")
    with pytest.raises(ResultsError, match=r"cells\[0\]\.metrics\.step_ms: 'fast' is not of type 'number', 'null'"):
        load(results_fixture.write(tmp_path / "v1.json", doc))


def test_nulls_and_every_shipped_results_file_still_load(tmp_path):
    doc = results_fixture.build()
    doc["cells"][0]["metrics"].update(epoch_s=None, time_to_accuracy_s=None, gpu_peak_mb=None, test_accuracy=1.0)
    assert load(results_fixture.write(tmp_path / "ok.json", doc))["cells"][0]["metrics"]["epoch_s"] is None
    shipped = sorted(ROOT.glob("results/**/bench-*.json"))
    assert shipped
    for path in shipped:
        assert load(path)["cells"]


# -- 2. a comparison with nothing to compare is bad input -----------------------------------------------------

def test_compare_of_runs_that_share_no_cell_says_so_and_exits_2(tmp_path, capsys):
    a = results_fixture.write(tmp_path / "a.json")
    other = results_fixture.build()
    for cell in other["cells"]:
        cell["model"] = "tinycnn"
    b = results_fixture.write(tmp_path / "b.json", other)
    code, out, err = cli(capsys, "report", "--compare", a, b)
    line = one_line_error(err)
    assert code == 2 and out == ""
    assert "nothing to compare" in line and "a.json has cnn, mlp" in line and "b.json has tinycnn" in line


def test_compare_with_an_empty_run_exits_2(tmp_path, capsys):
    a = results_fixture.write(tmp_path / "a.json")
    empty = results_fixture.build() | {"cells": []}
    b = results_fixture.write(tmp_path / "b.json", empty)
    code, _, err = cli(capsys, "report", "--compare", a, b)
    assert code == 2 and "b.json has no cells" in one_line_error(err)


# -- 3. report --json ----------------------------------------------------------------------------------------

def test_report_json_gives_the_tables_and_verdicts_as_data(tmp_path, capsys):
    path = results_fixture.write(tmp_path / "bench-default-20261126-054000.json")
    code, out, err = cli(capsys, "report", path, "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    run = doc["runs"][0]
    assert run["file"] == path.name and run["status"] == "complete"
    assert [t["model"] for t in run["tables"]] == ["cnn", "mlp"]
    cnn = {r["label"]: r for r in run["tables"][0]["rows"]}
    torch_row, numpy_row = cnn["torch (eager) batch 64"], cnn["numpy batch 64"]
    torch_cell = results_fixture.build()["cells"][1]
    assert torch_row["verdict"] == "baseline" and "step_ms" in torch_row["best"]
    assert torch_row["metrics"]["step_ms"] == torch_cell["metrics"]["step_ms"]
    assert torch_row["intervals"]["step_ms"] == torch_cell["uncertainty"]["step_ms"]["ci"]
    assert numpy_row["verdict"]["word"] == "slower" and numpy_row["verdict"]["ratio"] == pytest.approx(1.94, abs=0.01)
    failed = cnn["flax (step) batch 512"]
    assert failed["status"] == "error" and failed["error"] == results_fixture.FAILED_ERROR


def test_compare_json_exits_1_on_a_regression_and_0_without(tmp_path, capsys):
    a = results_fixture.write(tmp_path / "a.json")
    slower = results_fixture.build()
    _slower(slower, 1, 1.25)
    b = results_fixture.write(tmp_path / "b.json", slower)
    code, out, _ = cli(capsys, "report", "--compare", a, b, "--json")
    found = json.loads(out)
    assert code == 1 and found["a"] == "a.json" and found["b"] == "b.json"
    assert [(r["cell"], r["metric"]) for r in found["regressions"]] == [("torch cnn batch 64 cpu", "step_ms")]
    line = next(x for x in found["lines"] if x["cell"] == "torch cnn batch 64 cpu" and x["metric"] == "step_ms")
    assert line["raw"] == pytest.approx(1.25, rel=0.01) and line["verdict"]["word"] == "slower"
    code, out, _ = cli(capsys, "report", "--compare", a, a, "--json")
    assert code == 0 and json.loads(out)["regressions"] == []


def test_json_with_another_format_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "report", results_fixture.write(tmp_path / "a.json"), "--json", "--format", "csv")
    assert code == 2 and "--json" in one_line_error(err)


# -- 4. warnings are one plain line ---------------------------------------------------------------------------

def test_warnings_print_as_one_plain_line(tmp_path):
    code = ("import sys, warnings, numpy as np\n"
            "from fwbench.harness import cli, commands\n"
            "def noisy(args):\n"
            "    warnings.warn('could not cache MNIST in /x: denied\\nsecond line', stacklevel=2)\n"
            "    np.float32(3e38) * np.float32(10)\n"
            "    return 0\n"
            "commands.COMMANDS['models'] = noisy\n"
            "sys.exit(cli.main(['models']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0
    assert done.stderr.splitlines() == ["fwbench models: warning: could not cache MNIST in /x: denied second line",
                                        "fwbench models: warning: overflow encountered in scalar multiply"]


# -- 5. the progress bar ---------------------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


def _drawn(monkeypatch, **env) -> str:
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = Terminal()
    bar = Progress(4, "bench", stream=out)
    bar.update(4, "numpy cnn run 1")
    bar.close()
    return out.getvalue()


def test_the_bar_is_coloured_on_a_terminal_and_plain_under_no_color(monkeypatch):
    coloured, plain = _drawn(monkeypatch), _drawn(monkeypatch, NO_COLOR="1")
    assert SGR.search(coloured) and "4/4" in coloured
    assert not SGR.search(plain) and "bench [" + "#" * 30 + "] 4/4" in plain


def test_no_bar_when_stderr_is_not_a_terminal():
    script = ("import sys; from fwbench.harness.progress import Progress\n"
              "bar = Progress(3, 'bench')\n"
              "for i in range(1, 4):\n"
              "    bar.update(i); print(f'log {i}')\n"
              "bar.close()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout == "log 1\nlog 2\nlog 3\n" and done.stderr == ""


def _screen(raw: str) -> list[str]:
    """What a terminal shows after raw output: enough of VT100 for \\r, \\n, erase line and cursor up."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", raw):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token.startswith("\x1b["):
            code, arg = token[-1], token[2:-1].lstrip("?")
            if code == "A":
                row = max(0, row - int(arg or 1))
            elif code == "K":  # 2K: the whole line; K or 0K: to its end
                lines[row] = "" if arg == "2" else lines[row][:col]
        else:
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + 1:]
            col += 1
    return lines


def test_log_lines_print_above_a_live_bar_on_a_terminal():
    pty = pytest.importorskip("pty")
    script = ("import time; from fwbench.harness.progress import Progress\n"
              "bar = Progress(3, 'bench')\n"
              "for i in range(1, 4):\n"
              "    bar.update(i, f'cell {i}'); time.sleep(0.25); print(f'log line {i}')\n"
              "bar.close(); print('done')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")} | {
        "TERM": "xterm", "COLUMNS": "100", "LINES": "24"}
    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=child, stdout=child, stderr=child, cwd=ROOT,
                            env=env, close_fds=True)
    os.close(child)
    raw = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(parent)
    assert proc.wait(timeout=30) == 0
    assert "bench [####################..........] 2/3" in raw.decode()  # the bar was drawn, then erased
    shown = [line.rstrip() for line in _screen(raw.decode())]
    shown = [line for line in shown if line]
    assert shown == ["log line 1", "log line 2", "log line 3", "done"], shown


# -- 6. the scaffold test under tox, where bytecode is written -------------------------------------------------

def test_scaffold_layout_test_passes_when_python_writes_bytecode():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_scaffold.py::test_package_layout_and_entry_point"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-2000:]

"""`fwbench report`: Markdown, HTML, CSV and --compare views of a results file, and bad-file errors."""
import argparse
import base64
import copy
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import results_fixture
from fwbench import models
from fwbench.harness import documents
from fwbench.harness.bench import results
from fwbench.harness.reporting import ResultsError, compare, compare_view, render, report
from fwbench.harness.reporting.cli_args import add_arguments
from fwbench.harness.reporting.load import load
from fwbench.models.flops import step_flops

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-default-20261126-054000.json"
COLUMNS = ["backend", "step ms", "vs torch (eager)", "images/s", "GFLOP/s", "% of peak", "epoch s", "compile s",
           "peak MB", "accuracy", "time to accuracy s", "worst grad diff", "conformance"]


@pytest.fixture
def results_file(tmp_path):
    return results_fixture.write(tmp_path / NAME)


def args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def tables(md: str) -> dict[str, list[list[str]]]:
    """Markdown tables by the heading above them, as rows of stripped cells (header row first)."""
    out, title = {}, None
    for line in md.splitlines():
        if line.startswith("#"):
            title = line.lstrip("# ")
        elif line.startswith("| ") and not line.startswith("| ---"):
            out.setdefault(title, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return out


def row(table, label):
    return next(r for r in table if r[0] == label)


def test_markdown_has_one_table_per_model_with_every_column(results_file):
    found = tables(render([str(results_file)]))
    model_tables = {t: rows for t, rows in found.items() if rows[0] == COLUMNS}
    assert list(model_tables) == ["cnn (54,410 parameters)", "mlp (109,386 parameters)"]
    assert len(model_tables["cnn (54,410 parameters)"]) == 1 + 4  # three backends and the failed cell
    assert len(model_tables["mlp (109,386 parameters)"]) == 1 + 3


def test_markdown_bolds_the_best_value_of_each_column(results_file):
    found = tables(render([str(results_file)]))
    cnn, mlp = found["cnn (54,410 parameters)"], found["mlp (109,386 parameters)"]
    step = COLUMNS.index("step ms")
    assert [r[step].split(" [")[0] for r in cnn[1:4]] == ["13.00", "**6.71", "24.40"]  # lowest step time
    assert re.fullmatch(r"\*\*6\.71 \[6\.\d\d, 6\.\d\d\]\*\*", row(cnn, "torch (eager) batch 64")[step])
    assert row(cnn, "torch (eager) batch 64")[COLUMNS.index("images/s")] == "**9,538**"  # highest throughput
    verdicts = {r[0]: r[COLUMNS.index("vs torch (eager)")] for r in cnn[1:4]}
    assert verdicts["torch (eager) batch 64"] == "baseline"
    assert verdicts["numpy batch 64"].startswith("1.94x [") and verdicts["numpy batch 64"].endswith("] slower")
    assert row(cnn, "numpy batch 64")[COLUMNS.index("conformance")] == "passed"
    assert row(cnn, "flax (step) batch 64")[COLUMNS.index("worst grad diff")] == "**2.0e-07**"
    assert row(mlp, "flax (step) batch 64")[COLUMNS.index("accuracy")] == "**97.75%**"
    assert row(mlp, "numpy batch 64")[COLUMNS.index("time to accuracy s")] == "not reached"
    # torch and numpy tie on cnn accuracy: both are the best
    assert [row(cnn, b)[COLUMNS.index("accuracy")] for b in ("numpy batch 64", "torch (eager) batch 64")] == ["**98.71%**"] * 2


def _with_flops(doc: dict) -> dict:
    """The fixture as this fwbench's bench writes it: every run carries its step's FLOPs (no mfu stored)."""
    for cell in doc["cells"]:
        for run in cell["runs"]:
            if run["status"] == "ok":
                run["metrics"]["step_gflop"] = step_flops(models.get(cell["model"]), cell["batch_size"]) / 1e9
        results.summarize(cell)
    return doc


def test_markdown_shows_each_cells_flop_rate_and_share_of_the_peak(tmp_path):
    data = _with_flops(results_fixture.build())
    data["cells"][3]["device"] = "cuda"  # numpy mlp, as if on a GPU: the CPU's calibration is not its peak
    path = results_fixture.write(tmp_path / NAME, data)
    found = tables(render([str(path)]))
    cnn, mlp = found["cnn (54,410 parameters)"], found["mlp (109,386 parameters)"]
    assert cnn[0] == COLUMNS
    torch_cnn = row(cnn, "torch (eager) batch 64 cpu")
    # 64 x 1,211,482 FLOPs (tests/test_flops.py) in 6.71 ms: 11.56 GFLOP/s, the fastest; of the larger
    # calibration, 190 GFLOP/s, that is 6.08%
    assert torch_cnn[COLUMNS.index("GFLOP/s")] == "**11.6**" and torch_cnn[COLUMNS.index("% of peak")] == "**6.08%**"
    assert row(cnn, "numpy batch 64 cpu")[COLUMNS.index("GFLOP/s")] == "6.0"  # 0.0775 GFLOP in 13.0 ms
    gpu = row(mlp, "numpy batch 64 cuda")
    assert gpu[COLUMNS.index("GFLOP/s")] == "25.3" and gpu[COLUMNS.index("% of peak")] == "—"  # 0.0291 in 1.15 ms
    csv_rows = csv.DictReader(io.StringIO(render([str(path)], "csv")))
    rows = {(r["backend"], r["model"], r["device"]): r for r in csv_rows}
    # the FLOP-limited step: 0.0775 GFLOP at 190 GFLOP/s
    assert float(rows["torch", "cnn", "cpu"]["flop_limited_ms"]) == pytest.approx(77_534_848 / 190e9 * 1e3)
    assert rows["numpy", "mlp", "cuda"]["flop_limited_ms"] == "" and float(rows["numpy", "mlp", "cuda"]["gflops"]) > 0


def test_results_without_flop_figures_still_render_with_dashes(tmp_path, results_file):
    committed = sorted(ROOT.glob("results/bench-*.json"))[-1]  # written before FLOPs were counted
    for path in (results_file, committed, results_fixture.write(tmp_path / "v1.json", results_fixture.build_v1())):
        for rows in tables(render([str(path)])).values():
            if rows[0][:6] == COLUMNS[:6]:
                ok = [r for r in rows[1:] if not r[1].startswith("failed")]
                assert ok and all(r[4:6] == ["—", "—"] for r in ok), path


def test_failed_cell_shows_its_one_line_error(tmp_path):
    data = results_fixture.build()
    data["cells"][-1]["error"] = results_fixture.FAILED_ERROR + "\nTraceback (most recent call last): ..."
    path = results_fixture.write(tmp_path / NAME, data)
    cnn = tables(render([str(path)]))["cnn (54,410 parameters)"]
    failed = row(cnn, "flax (step) batch 512")
    assert failed[1] == f"failed: {results_fixture.FAILED_ERROR}"
    assert "Traceback" not in render([str(path)])


def test_header_describes_the_machine_and_how_epochs_are_timed(results_file):
    md = render([str(results_file)])
    header = next(line for line in md.splitlines() if line.startswith("**Machine**"))
    for fact in ("Intel(R) Xeon(R) Processor", "2 cores", "23.5 GB RAM", "no GPU", "Python 3.11.7",
                 "torch 2.13.0+cpu", "abc1234def56 (dirty)", "default", "2026-11-26"):
        assert fact in header
    assert "data already in memory" in md and "evaluation excluded" in md and "fresh processes" in md


def test_gpu_memory_shares_the_cell_with_host_memory(tmp_path):
    data = results_fixture.build()
    data["machine"]["gpu"] = [{"name": "NVIDIA H200", "driver": "580.159.04", "memory_mb": 143771}]
    data["cells"][1]["metrics"]["gpu_peak_mb"] = 1024.0
    md = render([str(results_fixture.write(tmp_path / NAME, data))])
    assert "NVIDIA H200" in md and "no GPU" not in md
    assert row(tables(md)["cnn (54,410 parameters)"], "torch (eager) batch 64")[COLUMNS.index("peak MB")] == "814 / 1,024 GPU"  # median of 812..816


def test_overhead_table(results_file):
    overhead = tables(render([str(results_file)]))["Harness overhead"]
    assert overhead[0] == ["backend", "fwbench step ms", "hand-written step ms", "ratio"]
    assert row(overhead, "torch") == ["torch", "6.70", "6.60", "1.015"]


def test_course_table_has_the_published_rows_and_ours(results_file):
    course = tables(render([str(results_file)]))["Course table"]
    assert course[0] == ["Model", "Parameters", "Data", "Time", "Accuracy"]
    assert course[1] == ["PyTorch MLP 784-128-64-10 — course (published)", "109K", "MNIST", "—", "97.0%"]
    assert course[2] == ["PyTorch CNN — course (published)", "—", "MNIST", "~30 s per epoch (CPU)", "98.5%"]
    assert course[3] == ["Naive NumPy convolution loops — course (published)", "—", "MNIST",
                         "~15 min per epoch", "—"]
    assert row(course, "fwbench torch (eager) cnn") == ["fwbench torch (eager) cnn", "54K", "MNIST 60k/10k", "6.3 s per epoch (CPU)",
                                                "98.71%"]
    assert row(course, "fwbench flax (step) mlp")[1:] == ["109K", "MNIST 60k/10k", "0.6 s per epoch (CPU)", "97.75%"]
    assert len(course) == 1 + 3 + 6  # the failed timing-only cell has no accuracy, so no row


@pytest.fixture(scope="module")
def html_text(tmp_path_factory):
    pytest.importorskip("matplotlib")
    path = results_fixture.write(tmp_path_factory.mktemp("html") / NAME)
    return render([str(path)], "html")


def test_html_is_self_contained(html_text):
    assert not re.search(r"https?://|<script|<link|@import|url\(", html_text)
    sources = re.findall(r'src="([^"]*)"', html_text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_html_embeds_every_figure_and_table(html_text):
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', html_text)
    # loss curves, throughput, one agreement heatmap per model, filters for the one conv model
    assert [alt for _, alt in images] == ["training loss curves", "images per second", "cnn agreement heatmap",
                                          "mlp agreement heatmap", "cnn first-layer filters"]
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data, _ in images)
    assert html_text.count("<table>") == 4  # cnn, mlp, overhead, course
    assert re.search(r'<td class="num best">6\.71 \[6\.\d\d, 6\.\d\d\]</td>', html_text)
    assert "failed: RESOURCE_EXHAUSTED" in html_text and f'colspan="{len(COLUMNS) - 1}"' in html_text
    assert "No first-layer filters recorded for mlp" in html_text


def test_html_skips_plots_with_a_note_when_data_is_missing(tmp_path):
    pytest.importorskip("matplotlib")
    data = results_fixture.build()
    del data["agreement"]
    for cell in data["cells"]:
        cell.update(curves=None, filters=None)
    html = render([str(results_fixture.write(tmp_path / NAME, data))], "html")
    assert html.count("<img ") == 1  # throughput only
    assert "No loss curves" in html and "No agreement table for cnn" in html and "No first-layer filters" in html


def test_csv_has_one_row_per_cell(results_file):
    rows = list(csv.DictReader(io.StringIO(render([str(results_file)], "csv"))))
    assert len(rows) == len(results_fixture.build()["cells"]) == 7
    torch_cnn = next(r for r in rows if (r["backend"], r["model"]) == ("torch", "cnn"))
    assert float(torch_cnn["step_ms"]) == 6.71 and torch_cnn["batch_size"] == "64" and torch_cnn["run"] == NAME
    failed = next(r for r in rows if r["status"] == "error")
    assert failed["error"] == results_fixture.FAILED_ERROR and failed["step_ms"] == ""


def _slower(doc: dict, index: int, factor: float) -> None:
    """Make every run of one cell `factor` times slower, and its figures with them."""
    cell = doc["cells"][index]
    for run in cell["runs"]:
        run["metrics"]["step_ms"] *= factor
    results.summarize(cell)


def _compare(a: dict, b: dict) -> tuple[str, dict]:
    found = compare.compare(a, b)
    return compare_view.render("A.json", a, "B.json", b, found), found


def test_compare_calls_a_25_percent_slower_cell_slower_and_2_percent_within_noise():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    _slower(b, 0, 1.02)  # numpy cnn
    _slower(b, 1, 1.25)  # torch cnn
    b["frameworks"]["torch"] = "torch 2.14.0+cpu"
    b["git"]["commit"] = "fedcba987654"
    md, found = _compare(a, b)
    cells = tables(md)["Per cell"]
    torch_step = next(r for r in cells if r[:2] == ["torch cnn batch 64 cpu", "step ms"])
    numpy_step = next(r for r in cells if r[:2] == ["numpy cnn batch 64 cpu", "step ms"])
    assert torch_step[5].startswith("1.2") and torch_step[6].startswith("**1.2") and torch_step[6].endswith("slower**")
    assert numpy_step[6].endswith("within noise") or numpy_step[6].endswith("no significant difference")
    assert [x.cell for x in found["regressions"]] == ["torch cnn batch 64 cpu"]
    assert "**1 regression**" in md
    differs = tables(md)["What differs between the runs"]
    assert ["torch version", "torch 2.13.0+cpu", "torch 2.14.0+cpu"] in differs
    assert ["commit", "abc1234def56 (dirty)", "fedcba987654 (dirty)"] in differs


def test_compare_removes_a_slower_machine_common_to_every_cell():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    for i in range(6):
        _slower(b, i, 1.18)
    b["calibration"] = {"start": {"matmul_gflops": 160.0}, "end": {"matmul_gflops": 162.0}}
    md, found = _compare(a, b)
    assert found["regressions"] == [] and found["shift"] == pytest.approx(1.18, rel=0.01)
    assert "Common shift: 1.180x" in md and "B's machine is 1.168x A's" in md and "Warning" not in md
    raw = next(r for r in tables(md)["Per cell"] if r[:2] == ["torch cnn batch 64 cpu", "step ms"])
    assert raw[4] == "1.180x" and raw[5] == "1.000x"


def test_compare_warns_when_the_shift_is_not_the_machine():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    for i in range(6):
        _slower(b, i, 1.3)
    md, _ = _compare(a, b)
    assert "**Warning**: the common shift (1.300x) is not explained by the calibration" in md


def test_compare_judges_accuracy_by_its_own_noise_and_failures_as_regressions():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    b["cells"][5]["metrics"]["test_accuracy"] -= 0.006  # flax mlp: 0.6 points, beyond ~0.3 of sampling noise
    b["cells"][3]["metrics"]["test_accuracy"] -= 0.001  # numpy mlp: 0.1 points, within it
    b["cells"][2].update(status="error", error="boom", metrics={})
    md, found = _compare(a, b)
    cells = tables(md)["Per cell"]
    assert next(r for r in cells if r[:2] == ["flax mlp batch 64 cpu", "accuracy"])[6].startswith("**0.99x lower")
    assert "within noise" in next(r for r in cells if r[:2] == ["numpy mlp batch 64 cpu", "accuracy"])[6]
    assert next(r for r in cells if r[:2] == ["flax cnn batch 64 cpu", "status"])[3:] == [
        "failed: boom", "—", "—", "**fails in B**"]
    assert len(found["regressions"]) == 2


def test_compare_gives_no_verdict_to_contended_cells_or_single_runs():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    _slower(b, 1, 1.5)
    b["cells"][1]["contended"] = True
    for cell in (a["cells"][0], b["cells"][0]):
        cell["runs"] = cell["runs"][:1]
        results.summarize(cell)
    md, found = _compare(a, b)
    cells = tables(md)["Per cell"]
    assert next(r for r in cells if r[:2] == ["torch cnn batch 64 cpu", "step ms"])[6].endswith("no verdict (contended)")
    assert "too few runs: 1 and 1" in next(r for r in cells if r[:2] == ["numpy cnn batch 64 cpu", "step ms"])[6]
    assert found["regressions"] == []


def test_report_command_writes_each_format(tmp_path, monkeypatch, capsys, results_file):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert report(args(str(results_file), "--format", "html")) == 0
    assert (tmp_path / "results" / "report.html").read_text().startswith("<!doctype html>")
    assert report(args(str(results_file), "--format", "csv", "--out", "out/r.csv")) == 0
    assert (tmp_path / "out" / "r.csv").read_text().startswith("run,suite,commit,backend")
    capsys.readouterr()
    assert report(args("--compare", str(results_file), str(results_file))) == 0
    assert "**0 regressions**" in capsys.readouterr().out
    slower = results_fixture.build()
    _slower(slower, 1, 1.25)
    slow_file = results_fixture.write(tmp_path / "slow.json", slower)
    assert report(args("--compare", str(results_file), str(slow_file))) == 1
    assert "torch cnn batch 64 cpu: step ms" in capsys.readouterr().out


def test_default_is_the_newest_results_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    results_fixture.write(tmp_path / "results" / "bench-quick-20261127-090000.json")
    results_fixture.write(tmp_path / "results" / "bench-default-20261126-054000.json")
    assert report(args()) == 0
    assert capsys.readouterr().out.startswith("# fwbench report: bench-quick-20261127-090000.json")
    assert render(["results"]).count("**Machine**") == 2  # a directory means every run in it


@pytest.mark.parametrize("content, says", [
    ("{not json", "not JSON"),
    (json.dumps({"schema": "fwbench.compare/1", "runs": []}), "unsupported schema 'fwbench.compare/1'"),
    (json.dumps([1, 2]), "not a fwbench results file"),
    (json.dumps({"schema": "fwbench.results/1", "cells": [{"backend": "torch", "model": "cnn", "status": "?"}]}),
     "cells[0] (torch cnn) has status '?'"),
    (json.dumps({"schema": "fwbench.results/2", "suite": "x", "status": "complete", "started": "now",
                 "cells": [{"backend": "torch", "model": "cnn", "status": "ok", "metrics": {}, "batch_size": 0}]}),
     "cells[0].batch_size: 0 is less than the minimum of 1 (schema results-2.schema.json)"),
])
def test_bad_file_gives_one_line_naming_it(tmp_path, content, says):
    path = tmp_path / "bench-bad.json"
    path.write_text(content)
    with pytest.raises(ResultsError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message
    with pytest.raises(ResultsError, match="no such file"):
        render([str(tmp_path / "missing.json")])


def test_markdown_and_csv_never_import_matplotlib(results_file):
    code = ("import sys; from fwbench.harness.reporting import render; "
            f"render([{str(results_file)!r}]); render([{str(results_file)!r}], 'csv'); "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_version_1_files_are_upgraded_on_load(tmp_path):
    path = results_fixture.write(tmp_path / NAME, results_fixture.build_v1())
    doc = load(path)
    assert doc["schema"] == documents.RESULTS and doc["upgraded_from"] == "fwbench.results/1"
    torch_cnn = next(c for c in doc["cells"] if (c["backend"], c["model"]) == ("torch", "cnn"))
    assert torch_cnn["metrics"]["step_ms"] == 6.71 and len(torch_cnn["runs"]) == 1
    assert torch_cnn["metrics"]["agreement_worst_rel_l2"] == 6.8e-07
    assert "torch (eager)" in render([str(path)])


def test_pytest_benchmark_export_is_read_by_pytest_benchmark(tmp_path, results_file):
    pytest.importorskip("pytest_benchmark")
    out = tmp_path / "0001_fwbench.json"
    out.write_text(render([str(results_file)], "pytest-benchmark"))
    doc = json.loads(out.read_text())
    bench = next(b for b in doc["benchmarks"] if b["name"] == "torch (eager) cnn b64 cpu")
    assert bench["stats"]["rounds"] == 5 * 20 and bench["stats"]["median"] == pytest.approx(6.71e-3, rel=0.02)
    assert bench["extra_info"]["runs"] == 5 and doc["commit_info"]["id"].startswith("abc1234")
    cli = Path(sys.executable).with_name("pytest-benchmark")
    again = tmp_path / "0002_fwbench.json"
    again.write_text(out.read_text())
    shown = subprocess.run([str(cli), "compare", str(out), str(again)], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0 and "torch (eager) cnn b64 cpu" in shown.stdout, shown.stderr


def test_a_change_that_only_the_shift_removal_shows_is_not_a_regression():
    a = results_fixture.build()
    b = copy.deepcopy(a)
    for i in range(3):
        _slower(b, i, 0.70)  # B's machine sped the cnn cells up 30% and left the mlp cells as they were
    md, found = _compare(a, b)
    assert found["regressions"] == []
    mlp = next(r for r in tables(md)["Per cell"] if r[:2] == ["numpy mlp batch 64 cpu", "step ms"])
    assert mlp[4] == "1.000x" and "slower only after removing the common shift" in mlp[6]

"""Bad input (issue 11): specs, options, data against spec, memory and divergence; one line, exit 2 (or 1)."""
import json
import math
import os
import re
import resource
import subprocess
import sys

import numpy as np
import pytest

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness import session
from fwbench.harness.cli import build_parser, main
from fwbench.harness.recipe import Recipe
from fwbench.harness.train import TrainingDiverged, train
from fwbench.models.params import init_params

FLAT = '[[layers]]\ntype = "flatten"\n'


def spec_file(tmp_path, name, layers, classes=10):
    """A spec on MNIST's input with the given TOML layer tables."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ninput = [1, 28, 28]\nclasses = {classes}\n{layers}')
    return str(path)


def dense(units):
    return f'[[layers]]\ntype = "dense"\nunits = {units}\n'


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- 1. spec files: capped, regular files only, named in every error ---

def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))  # an unbounded read fails fast, not the machine


def cli_subprocess(*argv, timeout=60):
    """`python -m fwbench ARGV` with a memory cap; a hang or runaway read fails the test instead of the machine."""
    return subprocess.run([sys.executable, "-m", "fwbench", *argv], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limited)


def test_spec_from_a_device_is_refused_without_reading_it():
    out = cli_subprocess("models", "/dev/zero")
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert "/dev/zero" in line and "not a regular file" in line and "TOML spec file" in line


def test_spec_from_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    out = cli_subprocess("models", str(fifo), timeout=30)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert str(fifo) in line and "not a regular file" in line


def test_spec_that_is_a_directory_says_what_was_expected(capsys, tmp_path):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    code, _, err = run(capsys, "models", str(folder))
    line = one_line(err)
    assert code == 2 and str(folder) in line and "is a directory" in line and "expected a TOML spec file" in line
    assert "Errno" not in line


def test_oversized_spec_is_refused_by_size(capsys, tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text("# padding\n" * (models.spec_file.MAX_SPEC_BYTES // 10 + 1))
    code, _, err = run(capsys, "models", str(path))
    line = one_line(err)
    assert code == 2 and str(path) in line and "larger than 1 MiB" in line


def test_binary_spec_names_the_file(capsys, tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    code, _, err = run(capsys, "models", str(path))
    line = one_line(err)
    assert code == 2 and str(path) in line and "UTF-8" in line


def test_empty_model_name_is_refused(capsys):
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", "")
    assert code == 2 and "choose one of" in one_line(err)


# --- 2. data against spec: labels must fit the spec's classes ---

@pytest.mark.parametrize("argv", [
    ["train", "--backend", "numpy", "--limit", "64", "--epochs", "1", "--no-progress"],
    ["train", "--backend", "torch", "--limit", "64", "--epochs", "1", "--no-progress"],
    ["compare", "--backends", "numpy", "--limit", "64", "--epochs", "1", "--no-progress"],
    ["agree", "--backends", "numpy,torch"],
])
def test_spec_with_fewer_classes_than_mnist_is_refused(capsys, tmp_path, argv):
    if "torch" in " ".join(argv):
        pytest.importorskip("torch")
    path = spec_file(tmp_path, "five", FLAT + dense(5), classes=5)
    if argv[0] == "compare":
        argv = [*argv, "--out", str(tmp_path / "out")]
    code, _, err = run(capsys, *argv, "--model", path)
    line = one_line(err)
    assert code == 2 and "classes = 5" in line and "10 classes" in line
    assert not list(tmp_path.glob("out/*.json"))  # refused before anything ran


def test_bench_refuses_a_spec_with_too_few_classes_up_front(tmp_path):
    from fwbench.harness.bench.command import suite_from
    path = spec_file(tmp_path, "five", FLAT + dense(5), classes=5)
    args = build_parser().parse_args(["bench", "--models", path, "--backends", "numpy"])
    with pytest.raises(models.SpecError, match="10 classes"):
        suite_from(args)


def test_random_data_agree_still_takes_any_classes(capsys, tmp_path):
    path = spec_file(tmp_path, "five", FLAT + dense(5), classes=5)
    code, out, _ = run(capsys, "agree", "--backends", "numpy", "--model", path, "--data", "random")
    assert code == 0 and "PASS" in out


def test_check_labels_reports_what_the_data_has():
    spec = models.get("mlp")
    session.check_labels(spec, np.array([0, 9, 3]))  # fits
    with pytest.raises(ValueError, match="the data has 12 classes"):
        session.check_labels(spec, np.array([0, 11]))


# --- 3. memory: estimated from the spec, refused before allocating ---

BIG_DENSE = FLAT + dense(10**9) + dense(10)
BIG_CONV = '[[layers]]\ntype = "conv2d"\nout_channels = 1000000\nkernel_size = 3\n' + FLAT + dense(10)


@pytest.fixture
def eight_gib(monkeypatch):
    """A machine with 8 GiB available of 16, whatever this one has."""
    monkeypatch.setattr(session, "available_memory", lambda: (8 * 2**30, 16 * 2**30), raising=False)


def test_estimate_counts_weights_state_and_activations():
    from fwbench.models.memory import estimate
    spec = models.get("cnn")  # 54,410 parameters; per image 784 in, 2 x 21,632 (conv, relu), 5,408 pooled, 10 out
    adam = estimate(spec, 64, "float32", "adam")
    assert adam.weights == 54410 * 4 and adam.gradients == 54410 * 4 and adam.optimizer == 2 * 54410 * 4
    assert adam.activations == 2 * 64 * 4 * (784 + 2 * 21632 + 5408 + 10)
    assert adam.total == adam.weights + adam.gradients + adam.optimizer + adam.activations
    sgd64 = estimate(spec, 64, "float64", "sgd", momentum=0.0)
    assert sgd64.optimizer == 0 and sgd64.weights == 2 * adam.weights
    assert estimate(spec, 64, "float32", "sgd", momentum=0.9).optimizer == adam.weights


@pytest.mark.parametrize("layers", [BIG_DENSE, BIG_CONV])
def test_models_shows_the_estimate_and_refuses_what_cannot_fit(capsys, tmp_path, eight_gib, layers):
    code, out, err = run(capsys, "models", spec_file(tmp_path, "big", layers))
    line = one_line(err)
    assert code == 2 and "training needs about" in out
    assert "needs about" in line and "8.0 GiB available" in line


def test_models_shows_the_estimate_of_a_spec_that_fits(capsys, eight_gib):
    code, out, err = run(capsys, "models", "cnn")
    assert code == 0 and not err
    assert "training needs about" in out and "at batch 64, float32, adam" in out


def test_train_refuses_a_model_too_large_before_allocating(capsys, tmp_path, eight_gib):
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", spec_file(tmp_path, "big", BIG_DENSE),
                       "--limit", "64", "--epochs", "1", "--no-progress")
    line = one_line(err)
    assert code == 2 and "needs about" in line and "available" in line


def test_agree_and_bench_refuse_a_model_too_large(capsys, tmp_path, eight_gib):
    from fwbench.harness.bench.command import suite_from
    code, _, err = run(capsys, "agree", "--backends", "numpy", "--model", spec_file(tmp_path, "big", BIG_DENSE))
    assert code == 2 and "needs about" in one_line(err)
    conv = spec_file(tmp_path, "conv", BIG_CONV)
    args = build_parser().parse_args(["bench", "--models", conv, "--backends", "numpy"])
    with pytest.raises(models.SpecError, match="needs about"):
        suite_from(args)


def test_memory_check_uses_the_batch_size_in_use(tmp_path, eight_gib):
    spec = models.get("cnn")
    session.check_memory(spec, 64, "float32", OptimizerConfig("adam"), "cpu")
    with pytest.raises(models.SpecError, match="batch 100000"):  # 100,000 cnn images: about 37 GiB of activations
        session.check_memory(spec, 100_000, "float32", OptimizerConfig("adam"), "cpu")


def test_available_memory_reads_proc_meminfo():
    have = session.available_memory()
    if not os.path.exists("/proc/meminfo"):
        assert have is None
        return
    available, total = have
    assert 0 < available <= total


# --- 4. divergence: a finite loss far above its start, or non-finite parameters ---

def test_huge_learning_rate_is_reported_as_divergence(capsys):
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", "mlp", "--limit", "2000", "--epochs", "1",
                       "--lr", "1e6", "--no-progress")
    line = one_line(err)
    assert code == 1 and "diverged" in line and "smaller --lr" in line


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n)


def test_non_finite_parameters_are_divergence(monkeypatch):
    spec = models.get("mlp")
    backend = NumpyBackend(spec, init_params(spec, 0))
    real = backend.get_params
    monkeypatch.setattr(backend, "get_params", lambda: {k: np.full_like(v, np.inf) for k, v in real().items()})
    x, y = _data()
    with pytest.raises(TrainingDiverged, match="not finite"):
        train(backend, Recipe(epochs=1, batch_size=32), x, y, x, y, progress=False)


def test_ordinary_training_is_not_divergence():
    spec = models.get("mlp")
    x, y = _data()
    result = train(NumpyBackend(spec, init_params(spec, 0)), Recipe(epochs=2, batch_size=32), x, y, x, y,
                   progress=False)
    assert result.epochs[-1].train_loss < 10 * math.log(10)


# --- 5 and 6. every number validated where it is parsed, naming the option ---

@pytest.mark.parametrize("argv,option", [
    (["train", "--backend", "numpy", "--momentum", "-5"], "--momentum"),
    (["train", "--backend", "numpy", "--momentum", "2"], "--momentum"),
    (["train", "--backend", "numpy", "--momentum", "1"], "--momentum"),
    (["train", "--backend", "numpy", "--momentum", "nan"], "--momentum"),
    (["train", "--backend", "numpy", "--lr", "inf"], "--lr"),
    (["train", "--backend", "numpy", "--lr", "nan"], "--lr"),
    (["train", "--backend", "numpy", "--lr", "-1"], "--lr"),
    (["train", "--backend", "numpy", "--seed", "-1"], "--seed"),
    (["train", "--backend", "numpy", "--seed", str(2**32)], "--seed"),
    (["train", "--backend", "numpy", "--seed", "1.5"], "--seed"),
    (["train", "--backend", "numpy", "--batch-size", "abc"], "--batch-size"),
    (["train", "--backend", "numpy", "--epochs", "abc"], "--epochs"),
    (["train", "--backend", "numpy", "--limit", "-5"], "--limit"),
    (["compare", "--momentum", "-0.5"], "--momentum"),
    (["compare", "--seed", "-1"], "--seed"),
    (["compare", "--backends", ""], "--backends"),
    (["compare", "--backends", " , "], "--backends"),
    (["agree", "--steps", "-1"], "--steps"),
    (["agree", "--steps", "x"], "--steps"),
    (["agree", "--backends", ""], "--backends"),
    (["agree", "--momentum", "2"], "--momentum"),
    (["agree", "--lr", "inf"], "--lr"),
    (["agree", "--seed", "-1"], "--seed"),
    (["agree", "--batch-size", "0"], "--batch-size"),
    (["bench", "--backends", ""], "--backends"),
    (["bench", "--models", ""], "--models"),
    (["bench", "--repeat", "0"], "--repeat"),
    (["bench", "--repeat", "abc"], "--repeat"),
    (["bench", "--order-seed", "-3"], "--order-seed"),
    (["bench", "--batch-sizes", "0"], "--batch-sizes"),
    (["bench", "--batch-sizes", "64,abc"], "--batch-sizes"),
    (["bench", "--batch-sizes", ""], "--batch-sizes"),
    (["report", "--noise-band", "2"], "--noise-band"),
    (["report", "--noise-band", "nan"], "--noise-band"),
])
def test_bad_numbers_and_lists_are_refused_where_parsed(capsys, argv, option):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(argv)  # refused while parsing: nothing runs
    line = one_line(capsys.readouterr().err)
    assert exit.value.code == 2 and f"argument {option}:" in line
    assert not re.search(r"invalid \w+ value", line)  # argparse's fallback names an internal function: _positive


@pytest.mark.parametrize("argv,field,value", [
    (["train", "--backend", "numpy", "--momentum", "0"], "momentum", 0.0),
    (["train", "--backend", "numpy", "--momentum", "0.99"], "momentum", 0.99),
    (["train", "--backend", "numpy", "--seed", str(2**32 - 1)], "seed", 2**32 - 1),
    (["train", "--backend", "numpy", "--lr", "1e-5"], "lr", 1e-5),
    (["agree", "--steps", "0"], "steps", 0),
    (["bench", "--batch-sizes", "64, 512"], "batch_sizes", (64, 512)),
    (["bench", "--order-seed", "0"], "order_seed", 0),
    (["compare", "--backends", "numpy,torch"], "backends", "numpy,torch"),
])
def test_good_numbers_and_lists_still_parse(argv, field, value):
    assert getattr(build_parser().parse_args(argv), field) == value


def test_memory_check_caps_the_batch_at_the_training_set(capsys, eight_gib):
    # --batch-size 1,000,000 on 64 images trains in batches of 64: nothing near 8 GiB.
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", "cnn", "--batch-size", "1000000",
                       "--limit", "64", "--epochs", "1", "--no-progress")
    assert code == 0 and not err


def test_agree_counts_the_batches_it_keeps_for_steps(capsys, monkeypatch):
    # 2,000 steps keep 2,000 float64 batches of 32 images (about 400 MB) before the first step runs.
    monkeypatch.setattr(session, "available_memory", lambda: (64 * 2**20, 2**30), raising=False)
    code, _, err = run(capsys, "agree", "--backends", "numpy", "--model", "mlp", "--steps", "2000")
    line = one_line(err)
    assert code == 2 and "batches" in line and "fewer --steps" in line


def test_models_json_is_the_table_as_data(capsys):
    code, out, _ = run(capsys, "models", "mlp", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["parameters"] == 109386 and sum(r["params"] for r in doc["layers"]) == 109386
    assert doc["memory"]["total_bytes"] == sum(doc["memory"][f"{k}_bytes"]
                                               for k in ("weights", "gradients", "optimizer", "activations"))
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and {"cnn", "mlp"} <= {d["name"] for d in json.loads(out)}


def test_a_reader_that_goes_away_is_not_an_error():
    # `fwbench models | head -c 1`: the pipe closes under the writer; no error line, the shell's 141.
    # Buffered stdout, as a user's shell has it (this machine sets PYTHONUNBUFFERED): the write fails at the flush.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "fwbench", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err

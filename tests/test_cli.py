"""The `fwbench` command: listings, one-line errors, and a short training run per backend."""
import json
import subprocess
import sys

import pytest

from fwbench import backends
from fwbench.harness.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_shipped_specs(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "cnn" in out and "54,410" in out and "109,386" in out
    assert "conv2d(32, k3, s1, p0) > relu > maxpool2d(2, s2) > flatten > dense(10)" in out


def test_models_shows_one_spec_layer_by_layer(capsys):
    code, out, _ = run(capsys, "models", "cnn")
    assert code == 0
    assert "32x13x13" in out and "54,090" in out  # the dense layer: 5408*10 + 10


def test_backends_lists_every_backend(capsys):
    code, out, _ = run(capsys, "backends", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"numpy", "torch", "flax", "keras", "micrograd"}
    assert rows["numpy"]["status"] == "ok" and "cpu" in rows["numpy"]["devices"]
    assert rows["numpy"]["modes"] == []
    if rows["torch"]["status"] == "ok":
        assert rows["torch"]["modes"] == ["eager", "channels_last", "compile", "cudagraphs", "ddp"]
    if rows["flax"]["status"] == "ok":
        assert rows["flax"]["modes"] == ["step", "scan", "step-tuned", "scan-tuned", "dp", "eigen"]
    if rows["keras"]["status"] == "ok":
        assert rows["keras"]["modes"] == ["graph", "xla", "loop", "native", "jax"]


def test_backends_lists_only_the_named_ones_and_refuses_an_unknown_name(capsys):
    code, out, _ = run(capsys, "backends", "numpy", "micrograd@x", "numpy@y", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["numpy", "micrograd"]  # modes dropped, once each
    code, out, err = run(capsys, "backends", "numpy", "nope")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1 and "unknown backend 'nope'" in err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--backend", "mxnet"], "unknown backend 'mxnet'; choose one of numpy, torch, flax"),
    (["train", "--backend", "nosuch.module:Thing"], "no module named 'nosuch.module'"),
    (["train", "--backend", "numpy@fast"], "backend 'numpy' has no mode 'fast'; it has none"),
    (["train", "--backend", "fwbench.harness.cli:Parser"], "is not a subclass of backends.base.Backend"),
    (["train", "--backend", "numpy", "--model", "resnet"], "unknown model 'resnet'; choose one of"),
    (["train", "--backend", "numpy", "--device", "cuda"], "cannot use device 'cuda'"),
    (["train", "--backend", "numpy", "--epochs", "0"], "must be a positive integer"),
    (["train", "--backend", "numpy", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["compare", "--backends", "numpy,caffe"], "unknown backend 'caffe'; choose one of"),
    (["train", "--backend", "numpy", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
])
def test_bad_input_gives_one_line_error(capsys, argv, needle):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_non_mnist_spec_is_refused_clearly(capsys, tmp_path):
    path = tmp_path / "rgb.toml"
    path.write_text('name = "rgb"\ninput = [3, 8, 8]\nclasses = 2\n'
                    '[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 2\n')
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", str(path))
    assert code == 2 and "MNIST images are [1, 28, 28]" in err


def test_train_json_summary_per_backend(capsys, trainable_backend):
    code, out, _ = run(capsys, "train", "--backend", trainable_backend, "--model", "tinycnn", "--limit", "2000",
                       "--epochs", "2", "--lr", "0.01", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["backend"] == trainable_backend  # a results cell with its one training run
    assert summary["model"] == "tinycnn" and summary["train_images"] == 2000
    assert len(summary["metrics"]["epoch_s_each"]) == 2
    first, second = summary["runs"][0]["epochs"]
    assert second["train_loss"] < first["train_loss"] < 2.31  # learning, from chance level ln(10)
    assert summary["metrics"]["test_accuracy"] > 0.5
    assert "others_cpu" in summary["runs"][0]["contention"]


def test_nan_loss_stops_with_epoch_and_step(capsys):
    code, _, err = run(capsys, "train", "--backend", "numpy", "--model", "mlp", "--limit", "640",
                       "--lr", "1e9", "--optimizer", "sgd", "--schedule", "constant", "--no-progress")
    assert code == 1
    assert "at epoch 1, step" in err and "smaller --lr" in err


def test_python_dash_m_harness_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "fwbench", "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "tinycnn" in out.stdout


def test_cli_and_numpy_training_never_import_frameworks():
    code = ("import sys; from fwbench.harness.cli import main; "
            "main(['train', '--backend', 'numpy', '--model', 'tinycnn', '--limit', '128', '--epochs', '1', "
            "'--no-progress', '--json']); "
            "bad = [m for m in ('torch', 'jax', 'flax', 'optax') if m in sys.modules]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_backends_shows_install_hint_for_a_missing_framework(capsys, monkeypatch):

    real = backends.missing
    monkeypatch.setattr(backends, "missing", lambda name: ["torch"] if name == "torch" else real(name))
    code, out, _ = run(capsys, "backends")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("torch"))
    assert "missing dependency" in line and "pip install 'fwbench[torch]'" in line
    assert any(row.startswith("numpy") and row.rstrip().endswith("ok") for row in out.splitlines())


def test_train_with_a_missing_framework_says_how_to_install(capsys, monkeypatch):

    monkeypatch.setattr(backends, "missing", lambda name: ["jax"])
    code, _, err = run(capsys, "train", "--backend", "flax", "--model", "tinycnn")
    assert code == 2 and "needs jax, which is not installed; install it with: pip install 'fwbench[flax]'" in err


def test_native_init_and_auto_device_are_recorded(capsys, trainable_backend):
    code, out, _ = run(capsys, "train", "--backend", trainable_backend, "--model", "tinycnn", "--limit", "256",
                       "--epochs", "1", "--init", "native", "--device", "auto", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["init"] == "native"
    assert summary["device"] == ("cuda" if "cuda" in backends.load(trainable_backend).devices() else "cpu")


def test_compare_writes_the_bench_schema(capsys, tmp_path):
    from fwbench.harness.reporting import render
    from fwbench.harness.reporting.load import load
    code, out, _ = run(capsys, "compare", "--backends", "numpy", "--model", "mlp", "--limit", "640", "--epochs", "2",
                       "--no-progress", "--out", str(tmp_path))
    assert code == 0
    (path,) = tmp_path.glob("compare-mlp-*.json")
    doc = load(path)  # the results/2 JSON Schema
    (cell,) = doc["cells"]
    assert doc["suite"] == "compare" and cell["status"] == "ok" and cell["metrics"]["test_accuracy"] > 0.3
    assert len(cell["metrics"]["epoch_s_each"]) == 2 and "mlp (109,386 parameters)" in render([str(path)])

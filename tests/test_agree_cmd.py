"""`fwbench agree`: tables, tolerances, trajectories, ties, dumps and finite differences."""
import json

import numpy as np
import pytest

from fwbench import backends, models
from fwbench.backends import Entry
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.cli import main
from test_ties import convention_backend

UNSHIPPED = {
    # stride and padding, overlapping pool, several convs and dense layers, 3 channels, non-square, 7 classes
    "rgb": ('input = [3, 13, 10]\nclasses = 7\n', [
        ("conv2d", "out_channels = 4\nkernel_size = 3\nstride = 2\npadding = 1"), ("relu", ""),
        ("maxpool2d", "size = 3\nstride = 1"), ("conv2d", "out_channels = 5\nkernel_size = 2"), ("relu", ""),
        ("flatten", ""), ("dense", "units = 9"), ("relu", ""), ("dense", "units = 7")]),
    "wide-pool": ('input = [2, 9, 16]\nclasses = 3\n', [
        ("conv2d", "out_channels = 3\nkernel_size = 3\npadding = 2"), ("maxpool2d", "size = 3\nstride = 2"),
        ("relu", ""), ("flatten", ""), ("dense", "units = 3")]),
    "binary-mlp": ('input = [1, 5, 7]\nclasses = 2\n', [
        ("flatten", ""), ("dense", "units = 6"), ("relu", ""), ("dense", "units = 2")]),
}


def write_spec(tmp_path, name):
    head, layers = UNSHIPPED[name]
    text = f'name = "{name}"\n{head}' + "".join(f'\n[[layers]]\ntype = "{t}"\n{body}\n' for t, body in layers)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def agree(capsys, *argv):
    code = main(["agree", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def agree_json(capsys, *argv):
    code, out, err = agree(capsys, *argv, "--json")
    return code, json.loads(out.strip().splitlines()[-1]), err


class Scaled(NumpyBackend):
    """A backend whose second conv-weight gradient is 0.1% off: the kind of bug agree must catch."""
    name = "scaled"

    def loss_and_grads(self, x, y):
        loss, grads = super().loss_and_grads(x, y)
        grads["3.weight"] = grads["3.weight"] * 1.001
        return loss, grads


Relu1 = convention_backend(1.0, "first")
Relu1.name = "relu1"


@pytest.fixture
def extra_backends(monkeypatch):
    monkeypatch.setitem(backends.BUILTIN, "scaled", Entry("test_agree_cmd:Scaled", ("numpy",), "-"))
    monkeypatch.setitem(backends.BUILTIN, "relu1", Entry("test_agree_cmd:Relu1", ("numpy",), "-"))


@pytest.mark.parametrize("name", UNSHIPPED)
def test_unshipped_specs_agree_in_float64(capsys, tmp_path, name):
    code, doc, _ = agree_json(capsys, "--model", write_spec(tmp_path, name), "--dtype", "float64",
                              "--batch-size", "5")
    assert code == 0, doc["breaches"]
    assert doc["data"].startswith("synthetic")
    assert all(m["rel_l2"] <= 1e-10 for cells in doc["table"].values() for m in cells.values())


def test_table_rows_pairs_and_metrics(capsys):
    code, doc, _ = agree_json(capsys, "--model", "tinycnn", "--dtype", "float64", "--data", "random",
                              "--batch-size", "4")
    installed = [n for n in ("numpy", "torch", "flax", "keras") if not backends.missing(n)]
    assert code == 0 and list(doc["backends"]) == installed
    assert list(doc["table"]) == ["logits", "loss", "0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]
    pairs = set(doc["table"]["0.weight"])
    assert {f"{n}~reference" for n in installed} <= pairs
    assert set(doc["table"]["loss"]["numpy~reference"]) == {"max_abs", "rel_l2", "rho", "cosine"}
    assert doc["backends"]["numpy"]["ties"] == {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"}
    assert doc["tolerance"]["grad_rel_l2"] == 1e-10


def test_float32_on_mnist_within_the_measured_bound(capsys):
    code, out, _ = agree(capsys, "--model", "cnn", "--batch-size", "16")
    assert code == 0
    assert "data: MNIST train batches" in out
    assert "0.weight" in out and "*" in out  # the worst cell is marked
    assert "PASS: every tensor within 1e-05 relative" in out


def test_a_wrong_gradient_fails_naming_parameter_and_pair(capsys, extra_backends):
    code, out, _ = agree(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends", "numpy,scaled",
                         "--data", "random")
    assert code == 1
    assert "FAIL 3.weight: scaled~reference differ by" in out
    assert "FAIL 3.weight: numpy~scaled" in out
    assert "0.weight: " not in out.split("FAIL", 1)[1]  # only the broken parameter is named


def test_trajectory_float64_sgd_stays_within_1e_8(capsys):
    code, doc, _ = agree_json(capsys, "--model", "tinycnn", "--dtype", "float64", "--steps", "12",
                              "--batch-size", "8", "--lr", "0.05")
    assert code == 0
    traj = doc["trajectory"]
    assert all(len(v) == 12 for v in traj["losses"].values())
    assert len(set(traj["losses"]["reference"])) == 12  # a new batch and new weights at every step
    assert all(np.allclose(v, traj["losses"]["reference"], rtol=1e-10) for v in traj["losses"].values())
    assert max(max(d) for d in traj["distance"].values()) <= 1e-8
    assert doc["tolerance"]["trajectory_rel"] == 1e-8


def test_different_tie_convention_is_reported_as_ties_not_failure(capsys, extra_backends):
    code, out, _ = agree(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends", "numpy,relu1", "--ties")
    assert "relu1: relu'(0) = 1, max-pool ties -> first" in out
    assert "tie case hits" in out and "differs at ties (conventions differ, not a failure): " in out
    assert code == 0 and "FAIL" not in out
    code, out, _ = agree(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends", "numpy,relu1",
                         "--data", "random")
    assert code == 0  # without exact zeros the conventions never matter


def test_dump_writes_what_others_need_to_check(capsys, tmp_path):
    code, _, _ = agree(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends", "numpy",
                       "--batch-size", "3", "--dump", str(tmp_path / "d"))
    assert code == 0
    d = tmp_path / "d"
    params, batch = np.load(d / "params.npz"), np.load(d / "batch.npz")
    assert params["0.weight"].shape == (4, 1, 3, 3) and params["6.weight"].shape == (16, 10)
    assert batch["x"].shape == (3, 1, 28, 28) and batch["y"].dtype.kind == "i"
    grads = np.load(d / "grads_numpy.npz")
    assert set(grads.files) == set(params.files)
    assert all(grads[k].shape == params[k].shape for k in params.files)
    summary = json.loads((d / "summary.json").read_text())
    ref = NumpyBackend(__import__("models").get("tinycnn"), dict(params), dtype="float64")
    loss, again = ref.loss_and_grads(batch["x"], batch["y"])
    assert summary["losses"]["numpy"] == pytest.approx(loss, rel=1e-12)
    assert np.allclose(again["3.weight"], grads["3.weight"], rtol=1e-12, atol=0)


def test_finite_differences(capsys):
    code, out, _ = agree(capsys, "--model", "tinycnn", "--check", "fd", "--batch-size", "8")
    assert code == 0 and "worst:" in out and "PASS" in out
    code, doc, _ = agree_json(capsys, "--model", "mlp", "--check", "fd", "--batch-size", "8")
    assert code == 0 and set(doc["fd"]) == {"1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"}


def test_unknown_backend_is_one_line(capsys):
    code, _, err = agree(capsys, "--backends", "numpy,theano")
    assert code == 2 and "unknown backend 'theano'" in err and len(err.strip().splitlines()) == 1


def test_skip_unsupported_leaves_out_a_refusing_backend_with_a_note(capsys):
    code, doc, _ = agree_json(capsys, "--model", "mlp", "--backends", "numpy,micrograd", "--batch-size", "4",
                              "--skip-unsupported")
    assert code == 0 and list(doc["backends"]) == ["numpy"]
    assert doc["notes"][0].startswith("micrograd skipped: backend 'micrograd'")
    code, _, err = agree(capsys, "--model", "mlp", "--backends", "numpy,micrograd", "--batch-size", "4")
    assert code == 2 and "micrograd" in err


def test_every_step_builds_the_named_mode(capsys):
    from test_registry import Moded
    Moded.built.clear()
    name = "test_registry:Moded@fancy"
    code, doc, _ = agree_json(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends", f"numpy,{name}",
                              "--batch-size", "2", "--data", "random", "--steps", "2", "--skip-unsupported")
    assert code == 0 and list(doc["backends"]) == ["numpy", name]
    assert doc["backends"][name]["mode"] == "fancy" and doc["backends"]["numpy"]["mode"] is None
    assert f"{name}~reference" in doc["table"]["loss"] and name in doc["trajectory"]["losses"]
    # usable, the two tie probes, the one-step comparison and the trajectory: five instances, all fancy.
    assert Moded.built == ["fancy"] * 5


def test_torch_in_a_mode_is_reported_under_its_name_and_mode(capsys):
    if backends.missing("torch"):
        pytest.skip("torch not installed")
    code, doc, _ = agree_json(capsys, "--model", "tinycnn", "--dtype", "float64", "--backends",
                              "numpy,torch@channels_last", "--batch-size", "2", "--data", "random")
    assert code == 0 and list(doc["backends"]) == ["numpy", "torch@channels_last"]
    assert doc["backends"]["torch@channels_last"]["mode"] == "channels_last"
    assert "torch@channels_last~reference" in doc["table"]["0.weight"]


def test_the_tie_case_says_where_numpy_rounds_it_by_winograd(capsys, tmp_path):
    from test_ties import WINO
    from fwbench.harness.agreement.ties import winograd_layers
    assert winograd_layers(WINO, "float32") == [2] and winograd_layers(WINO, "float64") == []
    path = tmp_path / "wino.toml"
    conv = 'type = "conv2d"\nout_channels = 16\nkernel_size = 3\npadding = "same"'
    layers = [conv, 'type = "relu"', conv, 'type = "relu"', 'type = "dropout"\nrate = 0.5',
              'type = "maxpool2d"\nsize = 2', 'type = "flatten"', 'type = "dense"\nunits = 4']
    path.write_text('name = "wino"\ninput = [1, 8, 8]\nclasses = 4\n' + "".join(f"\n[[layers]]\n{t}\n" for t in layers))
    assert models.get(str(path)) == WINO
    _, out, _ = agree(capsys, "--model", str(path), "--dtype", "float32", "--backends", "numpy", "--ties",
                      "--batch-size", "4")
    assert "note: numpy runs conv layer(s) 2 by Winograd in float32" in out
    code, out, _ = agree(capsys, "--model", str(path), "--dtype", "float64", "--backends", "numpy", "--ties",
                         "--batch-size", "4")
    assert code == 0 and "Winograd" not in out
    # Trained in lockstep, the trajectory's note says why numpy may part from the reference; not without steps.
    _, out, _ = agree(capsys, "--model", str(path), "--dtype", "float32", "--backends", "numpy", "--steps", "1",
                      "--batch-size", "4", "--data", "random")
    assert "note: numpy runs conv layer(s) 2 by Winograd in float32, with 4 to 12 times" in out
    _, out, _ = agree(capsys, "--model", str(path), "--dtype", "float32", "--backends", "numpy", "--batch-size", "4",
                      "--data", "random")
    assert "Winograd" not in out

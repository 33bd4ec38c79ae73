"""`fwbench agree` with batch norm and dropout: shared masks, compared buffers, and exact zeros judged on a floor."""
import dataclasses
import json

import numpy as np
import pytest

from fwbench import backends
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend, Pass
from fwbench.harness.agreement import agree as ag
from fwbench.harness.agreement.metrics import ZERO_FLOOR, compare, exact_zeros, gradient_floor
from fwbench.harness.cli import main
from fwbench.models.params import dropout_masks, init_buffers, init_params
from fwbench.models.spec import BatchNorm
from specs import FRESH, batch

CPU = {"numpy": "cpu"}


class Perturbed(NumpyBackend):
    """The NumPy backend with one gradient off: by a relative factor, or by noise of a size relative to the largest."""
    key, factor, noise = "1.weight", 0.0, 0.0

    def loss_and_grads(self, x, y):
        loss, grads = super().loss_and_grads(x, y)
        big = max(np.linalg.norm(g) for g in grads.values())
        noise = np.random.default_rng(0).standard_normal(grads[self.key].shape)
        grads[self.key] = grads[self.key] * (1 + self.factor) + self.noise * big * noise / np.linalg.norm(noise)
        return loss, grads


class OwnMasks(NumpyBackend):
    """Ignores the harness's masks and draws its own, as a backend that never implemented set_masks would."""

    def set_masks(self, masks):
        pass


class StaleMasks(NumpyBackend):
    """Keeps the first masks it is given: drops the same units at every step."""

    def set_masks(self, masks):
        if self.masks is None:
            super().set_masks(masks)


class TrainingForward(NumpyBackend):
    """forward() in training mode: batch statistics instead of the running ones, the mistake evaluation must catch."""

    def forward(self, x):
        run = Pass(True, self.buffers, masks=self.masks, rng=self.rng)
        return self._host(self._logits(self.xp.asarray(x, dtype=self.dtype), run).data)


class TensorflowMomentum(NumpyBackend):
    """Updates the running statistics with TensorFlow's momentum: running = m running + (1 - m) batch."""

    def train_step(self, batch_):
        before = self.get_buffers()
        loss = super().train_step(batch_)
        for i, layer in enumerate(self.spec.layers):
            if isinstance(layer, BatchNorm):
                m = layer.momentum
                for key in (f"{i}.running_mean", f"{i}.running_var"):
                    stat = (self.buffers[key] - (1 - m) * before[key]) / m  # the batch statistic PyTorch mixed in
                    self.buffers[key][...] = m * before[key] + (1 - m) * stat
        return loss


@pytest.fixture
def fakes(monkeypatch):
    """Each fake registered under its own name."""
    for cls in (Perturbed, OwnMasks, StaleMasks, TrainingForward, TensorflowMomentum):
        monkeypatch.setitem(backends.BUILTIN, cls.__name__.lower(),
                            backends.Entry(f"test_agree_state:{cls.__name__}", ("numpy",), "-"))


def fresh_step(names, dtype="float64", seed=3, n=8):
    params = init_params(FRESH, 1, "float64")
    x, y = batch(FRESH, n=n, seed=2)
    return ag.one_step(FRESH, names, params, x, y, dtype=dtype, devices={n_: "cpu" for n_ in names}, seed=seed)


def test_one_step_gives_every_backend_the_masks_of_the_runs_seed():
    report = fresh_step(["numpy"])
    assert ag.check(report, 1e-10, "float64") == []
    x, y = batch(FRESH, n=8, seed=2)
    alone = NumpyBackend(FRESH, init_params(FRESH, 1, "float64"), dtype="float64")
    alone.set_masks(dropout_masks(FRESH, 3, 0, 8))
    assert report.runs["numpy"].loss == report.runs[ag.REFERENCE].loss == alone.loss_and_grads(x, y)[0]
    alone.set_masks(dropout_masks(FRESH, 4, 0, 8))  # another seed drops other units
    assert alone.loss_and_grads(x, y)[0] != report.runs["numpy"].loss


def test_one_step_logits_are_evaluation_mode():
    report = fresh_step(["numpy"])
    x, _ = batch(FRESH, n=8, seed=2)
    alone = NumpyBackend(FRESH, init_params(FRESH, 1, "float64"), dtype="float64")
    assert np.array_equal(report.runs["numpy"].logits, alone.forward(x))


def test_one_step_catches_own_masks_and_a_training_forward(fakes):
    report = fresh_step(["numpy", "ownmasks", "trainingforward"])
    failed = {(line.split(":")[0], pair) for pair, line in ag.check(report, 1e-10, "float64")}
    assert ("loss", "ownmasks~reference") in failed and ("1.weight", "ownmasks~reference") in failed
    assert ("logits", "trainingforward~reference") in failed
    assert ("loss", "trainingforward~reference") not in failed  # its training pass is right
    assert not any("numpy~reference" == pair for _, pair in failed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exact_zero_gradients_are_judged_on_the_floor(dtype):
    report = fresh_step(["numpy"], dtype=dtype, n=16)
    # conv 0 and dense 8 feed a batch norm directly, conv 5 through an average pool and the dense layer.
    assert report.floored == ["0.bias", "5.bias", "8.bias"]
    assert report.floor == gradient_floor(report.runs[ag.REFERENCE].grads, dtype) > 0
    tol = ag.grad_tol(dtype, 16)
    assert ag.check(report, tol, dtype) == []
    if dtype == "float32":  # without the floor, rounding noise reads as a total disagreement
        run, ref = report.runs["numpy"], report.runs[ag.REFERENCE]
        assert compare(run.grads["8.bias"], ref.grads["8.bias"])["rel_l2"] > 1e3 * tol
    assert exact_zeros(report.runs[ag.REFERENCE].grads) == report.floored


def smallest_real(report):
    ref = report.runs[ag.REFERENCE].grads
    return min((k for k in ref if k not in report.floored), key=lambda k: np.linalg.norm(ref[k]))


@pytest.mark.parametrize("factor", [1e-2, 1e-6])
def test_a_small_error_in_the_smallest_real_gradient_fails_in_float64(fakes, factor):
    Perturbed.key = smallest_real(fresh_step(["numpy"]))
    try:
        Perturbed.factor = factor
        report = fresh_step(["numpy", "perturbed"])
    finally:
        Perturbed.factor = 0.0
    failed = ag.check(report, 1e-10, "float64")
    assert {pair for pair, _ in failed} == {"perturbed~reference", "numpy~perturbed"}
    assert all(line.startswith(f"{Perturbed.key}: ") for _, line in failed)
    assert report.table[Perturbed.key]["perturbed~reference"]["rel_l2"] == pytest.approx(factor, rel=1e-3)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_exact_zero_gradient_off_by_more_than_noise_fails(fakes, dtype):
    Perturbed.key = "8.bias"
    try:
        Perturbed.noise = 1e3 * ZERO_FLOOR[dtype] * ag.grad_tol(dtype, 8)  # a thousand times what passes
        report = fresh_step(["numpy", "perturbed"], dtype=dtype)
    finally:
        Perturbed.noise = 0.0
    failed = ag.check(report, ag.grad_tol(dtype, 8), dtype)
    assert [pair for pair, _ in failed] == ["perturbed~reference", "numpy~perturbed"]
    assert "8.bias: perturbed~reference differ by" in failed[0][1] and "of the zero floor" in failed[0][1]


def fresh_trajectory(names, steps=3, dtype="float64", seed=3):
    params = init_params(FRESH, 1, "float64")
    data = [batch(FRESH, n=8, seed=s) for s in range(steps)]
    return ag.trajectory(FRESH, names, params, data, OptimizerConfig("sgd", lr=0.1, momentum=0.9), dtype=dtype,
                         devices={n: "cpu" for n in names}, seed=seed)


def test_trajectory_compares_buffers_and_evaluation_logits():
    traj = fresh_trajectory(["numpy"])
    assert set(traj.buffers) == set(traj.distance) == {"numpy~reference"}
    assert traj.buffers["numpy~reference"] == [0.0, 0.0, 0.0]  # the same engine in float64: bit for bit
    assert traj.logits["numpy~reference"]["rel_l2"] == 0.0
    assert set(traj.final_buffers) == {"reference", "numpy"}
    start = init_buffers(FRESH, "float64")
    assert all(not np.allclose(traj.final_buffers["numpy"][k], v) for k, v in start.items())  # they did move
    assert ag.check_trajectory(traj, 1e-8, "float64") == []


def test_trajectory_uses_the_masks_of_each_step():
    traj = fresh_trajectory(["numpy"], steps=2, seed=5)
    reference = NumpyBackend(FRESH, init_params(FRESH, 1, "float64"), dtype="float64")
    reference.init_optimizer(OptimizerConfig("sgd", lr=0.1, momentum=0.9))
    for k in range(2):
        reference.set_masks(dropout_masks(FRESH, 5, k, 8))
        assert traj.losses["reference"][k] == reference.train_step(reference.prepare_batch(*batch(FRESH, 8, k)))


def test_trajectory_catches_stale_masks(fakes):
    lines = ag.check_trajectory(fresh_trajectory(["numpy", "stalemasks"]), 1e-8, "float64")
    assert any(line.startswith("parameters: stalemasks~reference drift") for line in lines)


def test_trajectory_catches_a_wrong_buffer_update_that_parameters_miss(fakes):
    traj = fresh_trajectory(["numpy", "tensorflowmomentum"])
    lines = ag.check_trajectory(traj, 1e-8, "float64")
    assert max(traj.distance["tensorflowmomentum~reference"]) <= 1e-12  # training reads batch statistics only
    assert any(line.startswith("buffers: tensorflowmomentum~reference drift") for line in lines)
    assert any(line.startswith("evaluation logits: tensorflowmomentum~reference differ") for line in lines)
    assert not any(line.startswith("parameters:") or "numpy~reference" in line for line in lines)


def test_trajectory_catches_a_training_forward(fakes):
    lines = ag.check_trajectory(fresh_trajectory(["numpy", "trainingforward"]), 1e-8, "float64")
    assert [line.split(" differ")[0] for line in lines] == ["evaluation logits: trainingforward~reference",
                                                             "evaluation logits: numpy~trainingforward"]


def toml_of(spec) -> str:
    """A spec back as TOML text."""
    out = f'name = "{spec.name}"\ninput = {list(spec.input)}\nclasses = {spec.classes}\n'
    for layer in spec.layers:
        out += "\n[[layers]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in dataclasses.asdict(layer).items()
                                            if v is not None)
    return out


@pytest.fixture
def fresh_path(tmp_path):
    path = tmp_path / "fresh.toml"
    path.write_text(toml_of(FRESH))
    return str(path)


def agree(capsys, *argv):
    code = main(["agree", *argv])
    return code, capsys.readouterr().out


def test_agree_json_shows_floor_buffers_and_evaluation_logits(capsys, fresh_path):
    code, out = agree(capsys, "--model", fresh_path, "--backends", "numpy", "--batch-size", "6", "--steps", "2",
                      "--seed", "4", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["passed"]
    assert doc["floor"]["rows"] == ["0.bias", "5.bias", "8.bias"]
    assert doc["floor"]["of_largest"] == ZERO_FLOOR["float32"] and doc["floor"]["value"] > 0
    traj = doc["trajectory"]
    assert set(traj) >= {"optimizer", "losses", "distance", "buffers", "evaluation_logits"}
    assert len(traj["buffers"]["numpy~reference"]) == 2
    assert set(traj["evaluation_logits"]["numpy~reference"]) == {"max_abs", "rel_l2", "rho", "cosine"}


def test_agree_text_marks_floored_rows_and_buffer_drift(capsys, fresh_path):
    code, out = agree(capsys, "--model", fresh_path, "--backends", "numpy", "--batch-size", "6", "--steps", "2",
                      "--dtype", "float64")
    assert code == 0
    assert "0.bias (floor)" in out and "judged against the floor" in out
    assert "buffer drift numpy~reference: 0 after 2 steps" in out
    assert "evaluation logits numpy~reference: 0 relative after 2 steps" in out
    assert "parameters, buffers and evaluation logits within 1e-08" in out


def test_agree_fails_on_a_wrong_buffer_update(capsys, fresh_path, fakes):
    code, out = agree(capsys, "--model", fresh_path, "--backends", "numpy,tensorflowmomentum", "--dtype", "float64",
                      "--batch-size", "6", "--steps", "2")
    assert code == 1 and "FAIL buffers: tensorflowmomentum~reference drift" in out


def test_dump_has_masks_and_buffers(capsys, fresh_path, tmp_path):
    d = tmp_path / "d"
    code, _ = agree(capsys, "--model", fresh_path, "--backends", "numpy", "--batch-size", "6", "--seed", "4",
                    "--steps", "2", "--dtype", "float64", "--dump", str(d))
    assert code == 0
    masks, want = np.load(d / "masks.npz"), dropout_masks(FRESH, 4, 0, 6)
    assert set(masks.files) == set(want) and all(np.array_equal(masks[k], want[k]) for k in want)
    start = np.load(d / "buffers.npz")
    assert all(np.array_equal(start[k], v) for k, v in init_buffers(FRESH, "float64").items())
    after = {name: np.load(d / f"buffers_{name}.npz") for name in ("numpy", "reference")}
    assert set(after["numpy"].files) == set(FRESH.buffer_shapes())
    assert not np.array_equal(after["numpy"]["1.running_mean"], start["1.running_mean"])
    # The dump reproduces the gradients: the masks make the training pass the same.
    x, y = np.load(d / "batch.npz")["x"], np.load(d / "batch.npz")["y"]
    again = NumpyBackend(FRESH, dict(np.load(d / "params.npz")), dtype="float64")
    again.set_masks(dict(masks))
    grads = np.load(d / "grads_numpy.npz")
    assert all(np.array_equal(g, grads[k]) for k, g in again.loss_and_grads(x, y)[1].items())


def test_dump_without_dropout_or_steps_has_empty_masks_and_no_final_buffers(capsys, tmp_path):
    d = tmp_path / "d"
    code, _ = agree(capsys, "--model", "tinycnn", "--backends", "numpy", "--batch-size", "2", "--data", "random",
                    "--dump", str(d))
    assert code == 0
    assert np.load(d / "masks.npz").files == [] and np.load(d / "buffers.npz").files == []
    assert not list(d.glob("buffers_*.npz"))


def test_count_ties_drops_the_units_of_the_runs_seed():
    from fwbench import models
    from fwbench.harness.agreement.ties import count_ties
    spec = models.parse({"name": "dropped", "input": [1, 4, 4], "classes": 2, "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 8}, {"type": "dropout", "rate": 0.5}, {"type": "relu"},
        {"type": "dense", "units": 2}]})
    x, _ = batch(spec, n=5)
    params = init_params(spec, 0, "float64")
    for seed in (0, 7):
        dropped = int((~dropout_masks(spec, seed, 0, 5)["2.mask"]).sum())  # dropped units reach the relu as 0
        assert count_ties(spec, params, x, seed=seed)["relu_zeros"] == dropped


def test_two_backends_are_held_to_twice_the_bound_each_has_against_the_reference():
    def cell(rel):
        return {"rel_l2": rel}
    tol = 1e-5
    table = {"1.weight": {"a~reference": cell(0.9 * tol), "b~reference": cell(0.9 * tol), "a~b": cell(1.8 * tol)},
             "1.bias": {"a~reference": cell(1.1 * tol), "b~reference": cell(0.5 * tol), "a~b": cell(2.1 * tol)}}
    report = ag.StepReport({}, list(table), table, floor=0.0, floored=[])
    failed = {(line.split(":")[0], pair) for pair, line in ag.check(report, tol, "float32")}
    # Both within tol of the exact answer may lie 2 tol apart; past that, or past tol from the reference, fails.
    assert failed == {("1.bias", "a~reference"), ("1.bias", "a~b")}
    assert ag.pair_tol("torch@compile~reference", tol) == tol and ag.pair_tol("numpy~torch@compile", tol) == 2 * tol

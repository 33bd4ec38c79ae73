"""fd_check: the NumPy engine's gradients pass against finite differences, and a wrong gradient is caught."""
import numpy as np
import pytest

from fwbench import models
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.agreement.fdcheck import cross_entropy, fd_check, worst
from fwbench.models.params import init_params
from specs import FRESH, WIDE, batch

SPECS = {"tinycnn": models.get("tinycnn"), "wide": WIDE}


def setup(key, n=8):
    spec = SPECS[key]
    return (spec, init_params(spec, 0, "float64"), *batch(spec, n=n))


@pytest.mark.parametrize("key", SPECS)
def test_engine_gradients_match_finite_differences(key):
    spec, params, x, y = setup(key)
    before = {k: v.copy() for k, v in params.items()}
    result = fd_check(spec, params, x, y, samples=4, seed=0)
    assert set(result) == set(spec.param_shapes())
    name, err = worst(result)
    assert err < 1e-6, (name, err)
    _, grads = NumpyBackend(spec, params, dtype="float64").loss_and_grads(x, y)
    for key_, r in result.items():
        assert len(r["coords"]) == len(set(r["coords"])) == min(4, params[key_].size)
        assert r["analytic"] == [grads[key_][c] for c in r["coords"]]
    assert all(np.array_equal(params[k], before[k]) for k in params)  # the caller's arrays are untouched


def test_new_layers_match_finite_differences_in_a_training_pass():
    params = init_params(FRESH, 1, "float64")
    result = fd_check(FRESH, params, *batch(FRESH, n=6), samples=6, seed=0)
    # Biases that feed a batch norm have a gradient of exactly zero: what is left is rounding over FLOOR.
    name, err = worst(result)
    assert err < 1e-5, (name, err)
    # The rest within 3e-6: loss_and_grads's loss (forward() is evaluation here) carries more rounding noise.
    assert max(r["worst_rel"] for k, r in result.items() if k not in ("0.bias", "5.bias", "8.bias")) < 3e-6


def test_samples_are_seeded_and_capped_at_the_parameter_size():
    spec, params, x, y = setup("wide", n=2)
    a, b = fd_check(spec, params, x, y, samples=6, seed=3), fd_check(spec, params, x, y, samples=6, seed=3)
    assert a["0.weight"]["coords"] == b["0.weight"]["coords"]
    assert fd_check(spec, params, x, y, samples=6, seed=4)["0.weight"]["coords"] != a["0.weight"]["coords"]
    assert sorted(a["0.bias"]["coords"]) == [(0,), (1,), (2,), (3,)]  # 4 entries, 6 asked for


def test_a_one_percent_gradient_error_is_caught(monkeypatch):
    spec, params, x, y = setup("tinycnn")
    honest = NumpyBackend.loss_and_grads

    def sabotaged(self, x, y):
        loss, grads = honest(self, x, y)
        grads["3.weight"] = grads["3.weight"] * 1.01
        return loss, grads
    monkeypatch.setattr(NumpyBackend, "loss_and_grads", sabotaged)
    result = fd_check(spec, params, x, y)
    name, err = worst(result)
    assert name == "3.weight" and err > 1e-3
    assert all(r["worst_rel"] < 1e-6 for k, r in result.items() if k != "3.weight")


def test_worst_and_cross_entropy_by_hand():
    assert worst({"a": {"worst_rel": 1e-9}, "b": {"worst_rel": 0.5}}) == ("b", 0.5)
    logits = np.array([[0.0, 0.0], [1000.0, 0.0]])  # the large logit must not overflow
    assert cross_entropy(logits, np.array([0, 0])) == pytest.approx(np.log(2) / 2)


def test_another_backend_is_checked_in_its_named_mode():
    from test_registry import Moded
    Moded.built.clear()
    spec, params, x, y = setup("tinycnn", n=2)
    result = fd_check(spec, params, x, y, samples=1, backend="test_registry:Moded@fancy")
    assert Moded.built == ["fancy"] and worst(result)[1] < 1e-6

"""Every backend, from the same canonical weights and batch, gives the same first-step loss and gradients."""
import numpy as np
import pytest

from fwbench import backends
from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.harness.agreement.metrics import compare, floors
from fwbench.models.params import dropout_masks, init_params
from specs import FRESH, SQUASH, WIDE, batch

SPECS = {"tinycnn": models.get("tinycnn"), "wide": WIDE, "squash": SQUASH}


def rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.fixture(scope="module")
def reference():
    """The NumPy engine in float64: loss, grads and logits per spec."""
    out = {}
    for key, spec in SPECS.items():
        ref = backends.load("numpy")(spec, init_params(spec, 0, "float64"), dtype="float64")
        x, y = batch(spec)
        loss, grads = ref.loss_and_grads(x, y)
        out[key] = (loss, grads, ref.forward(x))
    return out


@pytest.mark.parametrize("key", SPECS)
def test_first_step_agrees_in_float64(backend_name, key, reference):
    spec = SPECS[key]
    backend = backends.load(backend_name)(spec, init_params(spec, 0, "float64"), dtype="float64")
    x, y = batch(spec)
    ref_loss, ref_grads, ref_logits = reference[key]
    loss, grads = backend.loss_and_grads(x, y)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert rel(backend.forward(x), ref_logits) <= 1e-10
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        assert grads[name].shape == ref_grads[name].shape, name
        assert rel(grads[name], ref_grads[name]) <= 1e-10, name


@pytest.mark.parametrize("opt", [OptimizerConfig("sgd", lr=0.1, momentum=0.9), OptimizerConfig("adam", lr=0.01)])
def test_optimizer_steps_agree_in_float64(backend_name, opt):
    spec = SPECS["tinycnn"]
    x, y = batch(spec, n=8)
    params = init_params(spec, 0, "float64")
    trained = {}
    for name in dict.fromkeys(["numpy", backend_name]):
        backend = backends.load(name)(spec, params, dtype="float64")
        backend.init_optimizer(opt)
        for _ in range(3):
            backend.train_step(backend.prepare_batch(x, y))
        trained[name] = backend.get_params()
    for key in params:
        assert rel(trained[backend_name][key], trained["numpy"][key]) <= 1e-10, key
        assert not np.allclose(trained["numpy"][key], params[key])  # the steps really moved it


def test_every_new_layer_agrees_in_float64_in_training_evaluation_and_buffers(backend_name):
    """FRESH (not shipped): one step's loss and gradients under the harness's masks, then 3 steps' state."""
    x, y = batch(FRESH, n=6)
    params = init_params(FRESH, 0, "float64")
    runs = {}
    for name in dict.fromkeys(["numpy", backend_name]):
        backend = backends.load(name)(FRESH, params, dtype="float64")
        backend.set_masks(dropout_masks(FRESH, 0, 0, len(y)))
        loss, grads = backend.loss_and_grads(x, y)
        backend.init_optimizer(OptimizerConfig("sgd", lr=0.1, momentum=0.9))
        for step in range(3):
            backend.set_masks(dropout_masks(FRESH, 0, step, len(y)))
            backend.train_step(backend.prepare_batch(x, y))
        runs[name] = loss, grads, backend.get_params(), backend.get_buffers(), backend.forward(x)
    want, got = runs["numpy"], runs[backend_name]
    assert abs(got[0] - want[0]) <= 1e-10 * abs(want[0])
    floor = floors(want[1], "float64")  # the biases feeding a batch norm: zero in exact arithmetic
    assert sorted(k for k, f in floor.items() if f) == ["0.bias", "5.bias", "8.bias"]
    for name, g in want[1].items():
        assert compare(got[1][name], g, floor[name])["rel_l2"] <= 1e-10, name
    for part in (2, 3):
        assert set(got[part]) == set(want[part])
        for name, v in want[part].items():
            assert rel(got[part][name], v) <= 1e-10, name
    assert rel(got[4], want[4]) <= 1e-10

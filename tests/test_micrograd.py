"""The `micrograd` backend: the course's Value against torch and finite differences, the backend against NumPy."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fwbench import backends
from fwbench import models
from fwbench.backends import micrograd_backend
from fwbench.backends.base import BackendError, OptimizerConfig
from fwbench.backends.micrograd import layers
from fwbench.backends.micrograd.engine import Value
from fwbench.backends.micrograd_backend import MicrogradBackend
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.agreement.metrics import compare, gradient_floor
from fwbench.models.params import dropout_masks, init_buffers, init_params
from specs import FRESH, WIDE, batch

TINY = models.get("tinycnn")


def rel(a, b):
    return float(np.linalg.norm(np.subtract(a, b)) / max(np.linalg.norm(b), 1e-300))


def test_course_example():
    x = Value(2.0)
    y = Value(3.0)
    z = x * y + (x**2).relu()
    z.backward()
    assert (z.data, x.grad, y.grad) == (10.0, 7.0, 2.0)


def test_course_example_matches_torch():
    torch = pytest.importorskip("torch")
    x = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    z = x * y + (x**2).clamp(min=0)
    z.backward()
    assert (z.item(), x.grad.item(), y.grad.item()) == (10.0, 7.0, 2.0)


def expression(a: Value, b: Value) -> Value:
    """Every op the engine has: exp, log, int and float powers, division both ways, subtraction, negation."""
    c = a * b + b**3 - a / b
    return (c.exp() + 1).log() * a - 2 / b + (-a) ** 2 + a**0.5 - (1 - b).relu()


def test_ops_match_finite_differences():
    a, b = Value(1.5), Value(0.7)
    out = expression(a, b)
    out.backward()
    eps = 1e-6
    da = (expression(Value(1.5 + eps), Value(0.7)).data - expression(Value(1.5 - eps), Value(0.7)).data) / (2 * eps)
    db = (expression(Value(1.5), Value(0.7 + eps)).data - expression(Value(1.5), Value(0.7 - eps)).data) / (2 * eps)
    assert a.grad == pytest.approx(da, rel=1e-7) and b.grad == pytest.approx(db, rel=1e-7)


def test_a_value_used_twice_gets_both_gradients():
    x = Value(3.0)
    y = x * x + x
    y.backward()
    assert x.grad == 7.0  # 2x + 1


def test_relu_gradient_at_exactly_zero_is_zero():
    zero, tiny = Value(0.0), Value(1e-300)
    (zero.relu() + tiny.relu()).backward()
    assert (zero.grad, tiny.grad) == (0.0, 1.0)


def test_long_chain_does_not_hit_the_recursion_limit():
    xs = [Value(1.0) for _ in range(3 * sys.getrecursionlimit())]
    total = sum(xs)
    total.backward()
    assert total.data == len(xs) and all(x.grad == 1.0 for x in xs)


def test_maxpool_tie_goes_to_the_first_max():
    # Two overlapping 2x2 windows, each with tied 5s; the first in row-major order, (0, 1), wins both.
    grid = [[[Value(v) for v in row] for row in [[1.0, 5.0, 5.0], [2.0, 5.0, 0.0]]]]
    out = layers.maxpool2d(grid, size=2, stride=1)
    assert out[0][0][0] is grid[0][0][1] and out[0][0][1] is grid[0][0][1]  # row-major first max, both windows
    (out[0][0][0] + out[0][0][1]).backward()
    assert [[v.grad for v in row] for row in grid[0]] == [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("spec,n", [(TINY, 3), (WIDE, 2)], ids=["tinycnn", "wide"])
def test_loss_logits_and_grads_match_numpy(spec, n):
    params = init_params(spec, 0, "float64")
    x, y = batch(spec, n=n)
    ref = NumpyBackend(spec, params, dtype="float64")
    be = MicrogradBackend(spec, params, dtype="float64")
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    loss, grads = be.loss_and_grads(x, y)
    assert isinstance(loss, float) and abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    logits = be.forward(x)
    assert logits.shape == (n, spec.classes) and logits.dtype == np.float64
    assert rel(logits, ref.forward(x)) <= 1e-10
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        assert grads[k].dtype == np.float64 and grads[k].shape == ref_grads[k].shape, k
        assert rel(grads[k], ref_grads[k]) <= 1e-10, k


def fresh_pair(n: int = 4, masks: bool = True):
    """FRESH (every new layer) as the float64 NumPy reference and as micrograd, same parameters and masks."""
    params = init_params(FRESH, 0, "float64")
    pair = NumpyBackend(FRESH, params, dtype="float64"), MicrogradBackend(FRESH, params, dtype="float64")
    if masks:
        for be in pair:
            be.set_masks(dropout_masks(FRESH, 0, 0, n))
    return pair


def assert_grads_agree(grads, want):
    # A conv bias feeding a batch norm has an exactly-zero gradient: rounding noise in both, so it is held to a floor.
    floor = gradient_floor(want, "float64")
    assert set(grads) == set(want)
    for k in want:
        assert grads[k].dtype == np.float64 and grads[k].shape == want[k].shape, k
        assert compare(grads[k], want[k], floor)["rel_l2"] <= 1e-10, k


def test_new_layers_match_numpy_in_training_and_evaluation():
    # conv "same" with an even kernel at stride 2, batch norm on a map and on features, overlapping avgpool, dropout.
    ref, be = fresh_pair()
    x, y = batch(FRESH, n=4)
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    loss, grads = be.loss_and_grads(x, y)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert_grads_agree(grads, ref_grads)
    assert rel(be.forward(x), ref.forward(x)) <= 1e-10  # evaluation: running statistics, no dropout


def test_conv_same_pads_the_odd_pixel_at_the_end():
    spec = models.parse({"name": "same", "input": [1, 5, 4], "classes": 2, "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 2, "stride": 2, "padding": "same"},
        {"type": "flatten"}, {"type": "dense", "units": 2}]})
    assert spec.layers[0].pads(spec.input) == (0, 1, 0, 0)
    params = init_params(spec, 0, "float64")
    x, y = batch(spec, n=2)
    want_loss, want = NumpyBackend(spec, params, dtype="float64").loss_and_grads(x, y)
    loss, grads = MicrogradBackend(spec, params, dtype="float64").loss_and_grads(x, y)
    assert abs(loss - want_loss) <= 1e-10 * abs(want_loss)
    assert all(rel(grads[k], want[k]) <= 1e-10 for k in want)


def test_buffers_move_in_a_train_step_only():
    ref, be = fresh_pair()
    x, y = batch(FRESH, n=4)
    start = be.get_buffers()
    assert {k: v.tolist() for k, v in start.items()} == {k: v.tolist() for k, v in init_buffers(FRESH).items()}
    be.loss_and_grads(x, y)
    be.forward(x)
    assert all(np.array_equal(be.get_buffers()[k], start[k]) for k in start)  # neither pass updates them
    for model in (ref, be):
        model.init_optimizer(OptimizerConfig("sgd", lr=0.1))
        model.train_step(model.prepare_batch(x, y))
    got, want = be.get_buffers(), ref.get_buffers()
    assert set(got) == set(want) == set(FRESH.buffer_shapes())
    for k in want:
        assert got[k].dtype == np.float64 and not np.allclose(want[k], start[k]), k
        assert rel(got[k], want[k]) <= 1e-10, k  # the running variance from the unbiased batch variance
    assert rel(be.forward(x), ref.forward(x)) <= 1e-10  # and evaluation reads them
    be.set_buffers(start)
    ref.set_buffers(start)
    assert rel(be.forward(x), ref.forward(x)) <= 1e-10
    got = be.get_buffers()
    got["1.running_mean"][0] = 5.0
    assert be.get_buffers()["1.running_mean"][0] == 0.0  # copies out
    with pytest.raises(ValueError, match="buffers do not match"):
        be.set_buffers({})


def test_the_same_masks_give_the_same_loss_and_its_own_dropout_is_seeded():
    _, be = fresh_pair()
    x, y = batch(FRESH, n=4)
    with_masks = be.loss_and_grads(x, y)[0]
    assert be.loss_and_grads(x, y)[0] == with_masks
    be.set_masks(None)
    own = be.loss_and_grads(x, y)[0]
    assert own != with_masks and be.loss_and_grads(x, y)[0] != own  # fresh draws each pass
    again = MicrogradBackend(FRESH, init_params(FRESH, 0, "float64"), dtype="float64")
    assert again.loss_and_grads(x, y)[0] == own  # the same seed, the same draws
    with pytest.raises(ValueError, match="dropout masks do not match"):
        be.set_masks({"4.mask": np.ones((4, 5, 3, 2), bool)})
    be.set_masks(dropout_masks(FRESH, 0, 0, 3))
    with pytest.raises(ValueError, match="a batch of 4"):
        be.loss_and_grads(x, y)  # masks for 3 samples, a batch of 4


def test_dropout_scales_kept_units_and_passes_their_gradient():
    xs = [[Value(2.0), Value(2.0), Value(2.0)]]
    out = layers.dropout(xs[0], [True, False, True], 0.75)
    assert [v.data for v in out] == [8.0, 0.0, 8.0]
    sum(out).backward()
    assert [v.grad for v in xs[0]] == [4.0, 0.0, 4.0]


def test_batchnorm_needs_two_values_per_channel_in_training():
    spec = models.parse({"name": "bn1", "input": [1, 1, 1], "classes": 2, "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 2}, {"type": "batchnorm"}, {"type": "dense", "units": 2}]})
    be = MicrogradBackend(spec, dtype="float64")
    with pytest.raises(ValueError, match="batch of 2 or more"):
        be.loss_and_grads(*batch(spec, n=1))
    assert be.forward(batch(spec, n=1)[0]).shape == (1, 2)  # evaluation uses the running statistics


def test_forward_splits_a_batch_larger_than_the_cap(monkeypatch):
    be = MicrogradBackend(TINY, dtype="float64")
    monkeypatch.setattr(micrograd_backend, "MAX_SCALAR_OPS", 2 * be.ops_per_sample)  # chunks of 2
    x, _ = batch(TINY, n=5)
    want = NumpyBackend(TINY, be.get_params(), dtype="float64").forward(x)
    assert rel(be.forward(x), want) <= 1e-10


@pytest.mark.parametrize("opt", [OptimizerConfig("sgd", lr=0.1, momentum=0.9),
                                 OptimizerConfig("adam", lr=0.01)], ids=["sgd", "adam"])
def test_optimizer_steps_match_numpy(opt):
    params = init_params(TINY, 0, "float64")
    x, y = batch(TINY, n=4)
    trained = {}
    for cls in (NumpyBackend, MicrogradBackend):
        be = cls(TINY, params, dtype="float64")
        be.init_optimizer(opt)
        be.set_lr(opt.lr / 2)
        losses = [float(be.train_step(be.prepare_batch(x, y))) for _ in range(2)]
        trained[cls] = losses, be.get_params()
    (ref_losses, ref), (losses, got) = trained[NumpyBackend], trained[MicrogradBackend]
    assert losses == pytest.approx(ref_losses, rel=1e-10)
    for k in params:
        assert rel(got[k], ref[k]) <= 1e-10, k
        assert not np.allclose(got[k], params[k]), k  # the steps really moved it
    assert np.array_equal(params["0.weight"], init_params(TINY, 0, "float64")["0.weight"])  # copied, not aliased


def test_registry_metadata_and_default_init():
    assert backends.load("micrograd") is MicrogradBackend
    assert MicrogradBackend.version() == "course scalar engine, Python floats"
    assert MicrogradBackend.devices() == ["cpu"]
    got, want = MicrogradBackend(TINY, seed=3).get_params(), init_params(TINY, 3, "float64")
    assert all(np.array_equal(got[k], want[k]) and got[k].dtype == np.float64 for k in want)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_big_models_are_refused_when_built(name):
    with pytest.raises(BackendError) as e:
        MicrogradBackend(models.get(name), dtype="float64")
    message = str(e.value)
    assert "Python scalars" in message and "1,000,000" in message and "--model tinycnn" in message
    assert "\n" not in message


def test_a_huge_batch_is_refused_before_any_graph_is_built():
    be = MicrogradBackend(TINY, dtype="float64")
    n = micrograd_backend.MAX_SCALAR_OPS // be.ops_per_sample + 1
    x, y = np.zeros((n, *TINY.input)), np.zeros(n, dtype=np.int64)
    with pytest.raises(BackendError, match=r"Python scalars.*smaller --batch-size \(at most \d+\)") as e:
        be.loss_and_grads(x, y)
    assert "\n" not in str(e.value)
    be.init_optimizer(OptimizerConfig())
    with pytest.raises(BackendError, match="--batch-size"):
        be.train_step(be.prepare_batch(x, y))


def test_float32_cuda_and_unknown_optimizer_are_refused():
    with pytest.raises(BackendError, match="Python floats.*--dtype float64"):
        MicrogradBackend(TINY, dtype="float32")
    with pytest.raises(BackendError, match="cuda"):
        MicrogradBackend(TINY, device="cuda", dtype="float64")
    be = MicrogradBackend(TINY, dtype="float64")
    with pytest.raises(BackendError, match="init_optimizer"):
        be.train_step(be.prepare_batch(*batch(TINY, n=1)))
    with pytest.raises(BackendError, match="sgd, adam"):
        be.init_optimizer(OptimizerConfig(name="rmsprop"))


def test_no_framework_is_imported():
    code = ("import sys, numpy as np, models, backends\n"
            "be = backends.load('micrograd')(models.get('tinycnn'), dtype='float64')\n"
            "be.loss_and_grads(np.zeros((1, 1, 28, 28)), np.zeros(1))\n"
            "print(' '.join(m for m in ('torch', 'jax', 'flax', 'optax') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"

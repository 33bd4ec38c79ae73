"""Direct checks: jaxraw matches fwbench's float64 NumPy engine, before and after optimizer steps."""
import numpy as np
import pytest

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.agreement.metrics import compare
from fwbench.models.params import dropout_masks, init_params

from fwbench_jaxraw import JaxRawBackend

# Every layer with state or an unusual shape rule: "same" padding with an even kernel at stride 2 (the odd pixel
# at the end), batch norm on a map and on features, an overlapping average pool, dropout on a map and on features.
FRESH = models.parse({"name": "fresh", "input": [3, 9, 8], "classes": 4, "layers": [
    {"type": "conv2d", "out_channels": 5, "kernel_size": 4, "stride": 2, "padding": "same"},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "avgpool2d", "size": 3, "stride": 1},
    {"type": "dropout", "rate": 0.3},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "avgpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 6},
    {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3},
    {"type": "tanh"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 4},
]})


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def batch(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *spec.input)), rng.integers(0, spec.classes, n)


def worst(got: dict, want: dict) -> float:
    """The largest relative L2 error over the tensors of want, which got must have exactly."""
    assert set(got) == set(want)
    return max(compare(got[k], want[k])["rel_l2"] for k in want)


def test_matches_the_numpy_engine_in_float64():
    spec = models.get("tinycnn")
    params = init_params(spec, 0, "float64")
    x, y = batch(spec, 8)
    ours, ref = JaxRawBackend(spec, params, dtype="float64"), NumpyBackend(spec, params, dtype="float64")
    loss, grads = ours.loss_and_grads(x, y)
    want_loss, want = ref.loss_and_grads(x, y)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert max(rel(grads[k], want[k]) for k in want) < 1e-10
    for backend in (ours, ref):
        backend.init_optimizer(OptimizerConfig("adam", lr=1e-2))
        for lr in (1e-2, 5e-3, 1e-3):  # set_lr between steps keeps the moments
            backend.set_lr(lr)
            backend.train_step(backend.prepare_batch(x, y))
        backend.synchronize()
    got, want = ours.get_params(), ref.get_params()
    assert max(rel(got[k], want[k]) for k in want) < 1e-10


def test_new_layers_buffers_and_masks_match_the_numpy_engine_in_float64():
    params = init_params(FRESH, 0, "float64")
    x, y = batch(FRESH, 6)
    ours, ref = JaxRawBackend(FRESH, params, dtype="float64"), NumpyBackend(FRESH, params, dtype="float64")
    start = ref.get_buffers()
    assert worst(ours.get_buffers(), start) == 0
    # Running statistics away from (0, 1), so evaluation really reads them.
    moved = {k: v + np.linspace(0.5, 1.0, v.size) for k, v in start.items()}
    for backend in (ours, ref):
        backend.set_buffers(moved)
        backend.set_masks(dropout_masks(FRESH, 0, 0, len(y)))
    assert worst({"logits": ours.forward(x)}, {"logits": ref.forward(x)}) < 1e-12
    loss, grads = ours.loss_and_grads(x, y)
    want_loss, want = ref.loss_and_grads(x, y)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    # A bias whose output reaches a batch norm through linear layers alone has a zero gradient in exact
    # arithmetic; each backend's is rounding noise, so they are held to being tiny rather than to each other.
    largest = max(np.linalg.norm(g) for g in want.values())
    zero = {k for k in want if np.linalg.norm(want[k]) < 1e-12 * largest}
    assert zero == {"0.bias", "5.bias", "8.bias"}
    assert all(np.linalg.norm(grads[k]) < 1e-12 * largest for k in zero)
    assert worst({k: grads[k] for k in want if k not in zero}, {k: want[k] for k in want if k not in zero}) < 1e-10
    assert worst(ours.get_buffers(), moved) == 0  # loss_and_grads leaves the buffers alone
    for backend in (ours, ref):
        backend.init_optimizer(OptimizerConfig("sgd", lr=0.05, momentum=0.9))
        for step in range(3):  # fresh masks every step, as the harness hands them out
            backend.set_masks(dropout_masks(FRESH, 0, step, len(y)))
            backend.train_step(backend.prepare_batch(x, y))
        backend.synchronize()
    assert worst(ours.get_buffers(), ref.get_buffers()) < 1e-12
    assert worst(ours.get_buffers(), moved) > 1e-3  # the steps moved the running statistics
    assert worst(ours.get_params(), ref.get_params()) < 1e-10
    assert worst({"logits": ours.forward(x)}, {"logits": ref.forward(x)}) < 1e-10


def test_evaluation_uses_no_dropout_and_training_draws_its_own_masks():
    params = init_params(FRESH, 0, "float64")
    x, y = batch(FRESH, 6)
    model = JaxRawBackend(FRESH, params, dtype="float64", seed=3)
    assert np.array_equal(model.forward(x), model.forward(x))
    losses = [model.loss_and_grads(x, y)[0] for _ in range(3)]
    assert len(set(losses)) == 3  # a new draw every training pass
    again = JaxRawBackend(FRESH, params, dtype="float64", seed=3)
    assert [again.loss_and_grads(x, y)[0] for _ in range(3)] == losses  # the same seed, the same draws
    everything = {k: np.ones_like(v) for k, v in dropout_masks(FRESH, 0, 0, len(y)).items()}
    model.set_masks(everything)
    kept = model.loss_and_grads(x, y)[0]
    model.set_masks(None)
    assert model.loss_and_grads(x, y)[0] != kept
    with pytest.raises(ValueError, match="dropout masks do not match"):
        model.set_masks({"4.mask": np.ones((6, 5, 3, 2), bool)})


def test_train_step_updates_the_running_statistics_in_float32():
    x, y = batch(FRESH, 6)
    model = JaxRawBackend(FRESH, dtype="float32")
    model.set_masks(dropout_masks(FRESH, 0, 0, len(y)))
    model.init_optimizer(OptimizerConfig("adam", lr=0.0))
    before = model.forward(x)
    model.train_step(model.prepare_batch(x, y))
    model.synchronize()
    buffers = model.get_buffers()
    assert sorted(buffers) == sorted(FRESH.buffer_shapes())
    assert all(v.dtype == np.float32 and v.shape == FRESH.buffer_shapes()[k] for k, v in buffers.items())
    assert not np.allclose(buffers["1.running_mean"], 0) and not np.allclose(buffers["9.running_var"], 1)
    assert not np.allclose(model.forward(x), before)  # lr 0: only the running statistics changed
    assert model.get_params()["1.weight"].tolist() == [1.0] * 5  # native init: batch norm's gamma is one

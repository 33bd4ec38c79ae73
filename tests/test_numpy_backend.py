"""The `numpy` backend: parameter edge, gradients, optimizers, training, devices and import hygiene."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fwbench import backends
from fwbench import models
from fwbench.backends.base import BackendError, OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.models.params import init_params

SPEC = models.get("tinycnn")


def batch(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic images whose label is written as a bright row, so a tiny model can learn it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, SPEC.classes, n)
    x = rng.uniform(0, 0.3, (n, *SPEC.input))
    x[np.arange(n), 0, 2 + 2 * y, :] = 1.0
    return x, y


def test_registry_and_metadata():
    assert backends.load("numpy") is NumpyBackend
    assert NumpyBackend.version() == f"numpy {np.__version__}"
    assert NumpyBackend.devices() == ["cpu"]


def test_default_init_is_the_shared_seeded_initialiser():
    be = NumpyBackend(SPEC, seed=3)
    want = init_params(SPEC, 3, "float32")
    got = be.get_params()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_params_round_trip_copy_and_cast():
    src = init_params(SPEC, seed=1, dtype="float64")
    be = NumpyBackend(SPEC, src)  # float32 backend
    src["0.bias"][:] = 123.0  # the backend must own its copy
    out = be.get_params()
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["0.weight"], src["0.weight"], rtol=1e-6)
    assert not np.any(out["0.bias"] == 123.0)
    new = init_params(SPEC, seed=2)
    be.set_params(new)
    out = be.get_params()
    for k in new:
        np.testing.assert_array_equal(out[k], new[k])
    out["6.bias"][:] = 7.0  # nor may get_params hand out its arrays
    assert not np.any(be.get_params()["6.bias"] == 7.0)


def test_wrong_params_are_rejected():
    params = init_params(SPEC)
    params["0.weight"] = params["0.weight"][:2]
    with pytest.raises(ValueError, match="0.weight"):
        NumpyBackend(SPEC, params)
    with pytest.raises(ValueError, match="missing"):
        NumpyBackend(SPEC).set_params({"0.weight": params["0.weight"]})


def test_forward_shape_and_dtype():
    x, _ = batch(5)
    logits = NumpyBackend(SPEC).forward(x)
    assert logits.shape == (5, SPEC.classes) and logits.dtype == np.float32


def test_loss_and_grads_match_finite_differences():
    be = NumpyBackend(SPEC, dtype="float64", seed=0)
    x, y = batch(6)
    _, grads = be.loss_and_grads(x, y)
    params, eps, rng = be.get_params(), 1e-6, np.random.default_rng(1)
    for key, p in params.items():
        assert grads[key].shape == p.shape
        for _ in range(3):
            i = tuple(rng.integers(0, d) for d in p.shape)
            old = p[i]
            p[i] = old + eps
            be.set_params(params)
            hi, _ = be.loss_and_grads(x, y)
            p[i] = old - eps
            be.set_params(params)
            lo, _ = be.loss_and_grads(x, y)
            p[i] = old
            num = (hi - lo) / (2 * eps)
            assert grads[key][i] == pytest.approx(num, rel=1e-5, abs=1e-9), (key, i)
    be.set_params(params)


def reference_grads(x, y):
    """A second backend used only as a gradient oracle for the hand-written updates."""
    oracle = NumpyBackend(SPEC, dtype="float64", seed=0)

    def grads(params):
        oracle.set_params(params)
        return oracle.loss_and_grads(x, y)[1]
    return grads


def test_sgd_momentum_matches_reference_update():
    x, y = batch()
    be = NumpyBackend(SPEC, dtype="float64", seed=0)
    be.init_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.9))
    grads, p = reference_grads(x, y), be.get_params()
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for _ in range(3):
        g = grads(p)
        v = {k: 0.9 * v[k] + g[k] for k in p}
        p = {k: p[k] - 0.1 * v[k] for k in p}
        be.train_step(be.prepare_batch(x, y))
    for k, a in be.get_params().items():
        np.testing.assert_allclose(a, p[k], rtol=1e-10, atol=1e-12)


def test_set_params_after_init_optimizer_updates_the_new_params():
    x, y = batch()
    be = NumpyBackend(SPEC, dtype="float64", seed=0)
    be.init_optimizer(OptimizerConfig(name="sgd", lr=0.1))
    new = init_params(SPEC, seed=5, dtype="float64")
    be.set_params(new)
    g = reference_grads(x, y)(new)
    be.train_step(be.prepare_batch(x, y))
    for k, a in be.get_params().items():
        np.testing.assert_allclose(a, new[k] - 0.1 * g[k], rtol=1e-12, atol=1e-12)


def test_adam_matches_reference_and_set_lr_keeps_state():
    x, y = batch()
    be = NumpyBackend(SPEC, dtype="float64", seed=0)
    be.init_optimizer(OptimizerConfig(name="adam", lr=1e-2, betas=(0.9, 0.99), eps=1e-6))
    grads, p = reference_grads(x, y), be.get_params()
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t, lr in enumerate([1e-2, 1e-2, 3e-3, 3e-3], start=1):
        if t == 3:
            be.set_lr(3e-3)
        g = grads(p)
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.99 * v[k] + 0.01 * g[k] ** 2
            mhat, vhat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.99 ** t)
            p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + 1e-6)
        be.train_step(be.prepare_batch(x, y))
    for k, a in be.get_params().items():
        np.testing.assert_allclose(a, p[k], rtol=1e-9, atol=1e-12)


def test_adam_training_lowers_the_loss():
    x, y = batch(16)
    be = NumpyBackend(SPEC, seed=0)
    be.init_optimizer(OptimizerConfig(name="adam", lr=5e-2))
    data = be.prepare_batch(x, y)
    losses = [float(be.train_step(data)) for _ in range(30)]
    assert isinstance(be.train_step(data), np.floating)
    assert all(v.dtype == np.float32 for v in be.get_params().values())  # no upcast by the optimizer
    assert losses[-1] < 0.5 * losses[0], losses


def test_prepare_batch_casts():
    x, y = NumpyBackend(SPEC, dtype="float64").prepare_batch(np.zeros((2, 1, 28, 28), np.float32), [1, 2])
    assert x.dtype == np.float64 and y.dtype == np.int64


def test_cuda_is_refused():
    with pytest.raises(BackendError, match="cuda"):
        NumpyBackend(SPEC, device="cuda")


def test_bad_dtype_and_optimizer_are_refused():
    with pytest.raises(BackendError, match="float16"):
        NumpyBackend(SPEC, dtype="float16")
    be = NumpyBackend(SPEC)
    with pytest.raises(BackendError, match="init_optimizer"):
        be.train_step(be.prepare_batch(*batch()))
    with pytest.raises(BackendError, match="sgd, adam"):
        be.init_optimizer(OptimizerConfig(name="rmsprop"))


def test_no_framework_is_imported():
    code = (
        "import sys, numpy as np, models, harness, backends.numpy_backend as nb\n"
        "from fwbench.backends.base import OptimizerConfig\n"
        "be = nb.NumpyBackend(models.get('tinycnn'))\n"
        "be.init_optimizer(OptimizerConfig())\n"
        "be.train_step(be.prepare_batch(np.zeros((2, 1, 28, 28)), np.zeros(2)))\n"
        "print(' '.join(m for m in ('torch', 'jax', 'flax', 'optax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"


FUSED_SPECS = {"cnn": models.get("cnn"), "tinycnn": models.get("tinycnn"), "relu-pool": models.parse({
    "name": "relu-pool", "input": [2, 9, 9], "classes": 3, "layers": [
        {"type": "conv2d", "out_channels": 3, "kernel_size": 2, "padding": 1}, {"type": "relu"},
        {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "relu"}, {"type": "flatten"},
        {"type": "dense", "units": 5}, {"type": "relu"}, {"type": "dense", "units": 3}]}),
    "lenet5": models.get("lenet5"), "act-pools": models.parse({
        "name": "act-pools", "input": [2, 12, 12], "classes": 3, "layers": [
            {"type": "conv2d", "out_channels": 3, "kernel_size": 2, "padding": 1}, {"type": "sigmoid"},
            {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "relu"},
            {"type": "conv2d", "out_channels": 4, "kernel_size": 2}, {"type": "relu"}, {"type": "avgpool2d", "size": 2},
            {"type": "conv2d", "out_channels": 2, "kernel_size": 1}, {"type": "avgpool2d", "size": 2},
            {"type": "flatten"}, {"type": "dense", "units": 3}]}), "tanh-pools": models.parse({
        "name": "tanh-pools", "input": [2, 12, 12], "classes": 3, "layers": [
            {"type": "conv2d", "out_channels": 3, "kernel_size": 2, "padding": 1}, {"type": "tanh"},
            {"type": "maxpool2d", "size": 2}, {"type": "conv2d", "out_channels": 4, "kernel_size": 2},
            {"type": "batchnorm"}, {"type": "tanh"}, {"type": "maxpool2d", "size": 2},
            {"type": "conv2d", "out_channels": 2, "kernel_size": 1}, {"type": "tanh"},
            {"type": "maxpool2d", "size": 2}, {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 3}]})}


@pytest.mark.parametrize("name", FUSED_SPECS)
def test_fused_ops_equal_the_layers_in_spec_order_bit_for_bit(name):
    """conv [activation] [pool [relu]], dense + relu, relu or tanh + maxpool fused: the same loss and gradients."""
    spec = FUSED_SPECS[name]
    params = init_params(spec, 0)
    rng = np.random.default_rng(0)
    # Few distinct values, so pool windows hold ties, relu sees exact zeros, and the arithmetic is exact.
    x = rng.integers(-1, 2, (4, *spec.input)).astype(np.float32)
    y = rng.integers(0, spec.classes, 4)
    params = {k: rng.integers(-1, 2, v.shape).astype(np.float32) for k, v in params.items()}

    class Unfused(NumpyBackend):
        fuse = False
    fused, plain = NumpyBackend(spec, params), Unfused(spec, params)
    assert len(fused._steps) < len(plain._steps) == len(spec.layers)
    (loss, grads), (want_loss, want) = fused.loss_and_grads(x, y), plain.loss_and_grads(x, y)
    assert loss == want_loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], want[k], err_msg=k)


def test_a_pool_window_too_wide_to_fuse_takes_the_plain_ops():
    """16 x 16 windows have 256 positions: the winner's index, 0 to 255, still fits the uint8 that keeps it."""
    spec = models.parse({"name": "wide-pool", "input": [1, 32, 32], "classes": 3, "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 1}, {"type": "relu"},
        {"type": "maxpool2d", "size": 16}, {"type": "flatten"}, {"type": "dense", "units": 3}]})
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    loss, grads = NumpyBackend(spec, init_params(spec, 0)).loss_and_grads(x, np.array([0, 2]))
    assert np.isfinite(loss) and np.abs(grads["0.weight"]).sum() > 0


def test_dense_weights_are_stored_column_by_column_and_read_back_canonical():
    spec = models.get("mlp")
    params = init_params(spec, 0)
    backend = NumpyBackend(spec, params)
    dense_weights = [k for k, v in params.items() if v.ndim == 2]
    assert dense_weights and all(backend.params[k].data.flags.f_contiguous for k in dense_weights)
    for k, v in backend.get_params().items():
        np.testing.assert_array_equal(v, params[k])

"""Flax's batch norm, dropout, average pooling and "same" padding against the NumPy engine, in every mode."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

from jax import lax  # noqa: E402

from fwbench import models  # noqa: E402
from fwbench.backends import flax_kernels  # noqa: E402
from fwbench.backends.base import BackendError, OptimizerConfig  # noqa: E402
from fwbench.backends.flax_backend import FlaxBackend  # noqa: E402
from fwbench.backends.numpy_backend import NumpyBackend  # noqa: E402
from fwbench.harness.agreement.metrics import compare, exact_zeros, gradient_floor  # noqa: E402
from fwbench.harness.data import batch_order  # noqa: E402
from fwbench.models.params import dropout_masks, init_buffers, init_params  # noqa: E402
from specs import FRESH, SPECS, batch, relerr  # noqa: E402

MODES = FlaxBackend.modes
# Batch norm and dropout on the flatten of a map: flax sees those features in H, W, C order.
FEATURES = models.parse({"name": "features", "input": [2, 5, 4], "classes": 3, "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 2, "stride": 2, "padding": "same"},
    {"type": "flatten"},
    {"type": "batchnorm", "momentum": 0.2},
    {"type": "dropout", "rate": 0.4},
    {"type": "relu"},
    {"type": "dense", "units": 3},
]})
CASES = {"fresh": FRESH, "features": FEATURES}
# Adam's eps 1e-6, not 1e-8: it divides the rounding noise of the exactly-zero conv-bias gradient (1e-16) by
# eps, and at 1e-8 that noise alone moves the bias by 1e-10 in a step.
CONFIGS = [OptimizerConfig("sgd", lr=0.1, momentum=0.9), OptimizerConfig("adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6)]


def pair(spec, mode="step", seed=0):
    """The float64 NumPy reference and a float64 flax backend at the same parameters."""
    p = init_params(spec, seed, "float64")
    return NumpyBackend(spec, p, dtype="float64"), FlaxBackend(spec, p, dtype="float64", mode=mode)


def assert_agree(got: dict, want: dict, zeros=(), floor=0.0):
    """Every tensor of got within 1e-10 of want, relative L2; those named in zeros against the absolute floor."""
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == np.float64, k
        assert compare(got[k], want[k], floor if k in zeros else 0.0)["rel_l2"] <= 1e-10, k


@pytest.mark.parametrize("mode", ["step", "step-tuned"])
@pytest.mark.parametrize("name", CASES)
def test_training_pass_with_harness_masks_matches_numpy(name, mode):
    spec = CASES[name]
    ref, f = pair(spec, mode)
    x, y = batch(spec, 6)
    start = f.get_buffers()
    for b in (ref, f):
        b.set_masks(dropout_masks(spec, 0, 0, 6))
    (lref, gr), (lf, gf) = ref.loss_and_grads(x, y), f.loss_and_grads(x, y)
    assert lf == pytest.approx(lref, rel=1e-10)
    # A bias feeding a batch norm has an exactly-zero gradient, rounding noise on both sides: held to the floor.
    assert exact_zeros(gr) == (["0.bias", "5.bias", "8.bias"] if spec is FRESH else ["0.bias"])
    assert_agree(gf, gr, exact_zeros(gr), gradient_floor(gr, "float64"))
    assert all(np.array_equal(v, start[k]) for k, v in f.get_buffers().items())  # loss_and_grads leaves them
    assert relerr(f.forward(x), ref.forward(x)) <= 1e-10


@pytest.mark.parametrize("name", CASES)
def test_buffers_round_trip_and_evaluation_reads_them(name):
    spec = CASES[name]
    ref, f = pair(spec)
    assert {k: v.tolist() for k, v in f.get_buffers().items()} == {
        k: v.tolist() for k, v in init_buffers(spec, "float64").items()}
    rng = np.random.default_rng(3)
    buffers = {k: rng.random(s) + 0.5 for k, s in spec.buffer_shapes().items()}
    x, _ = batch(spec, 5)
    before = f.forward(x)
    for b in (ref, f):
        b.set_buffers(buffers)
    got = f.get_buffers()
    assert all(got[k].dtype == np.float64 and np.array_equal(got[k], v) for k, v in buffers.items())
    assert not np.allclose(f.forward(x), before)
    assert relerr(f.forward(x), ref.forward(x)) <= 1e-10
    with pytest.raises(ValueError, match="buffers do not match"):
        f.set_buffers({})


@pytest.mark.parametrize("config", CONFIGS, ids=["sgd", "adam"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_three_steps_with_harness_masks_match_numpy(name, mode, config):
    spec, n = CASES[name], 6
    ref, f = pair(spec, mode)
    x, y = batch(spec, 3 * n, seed=2)
    order = [np.arange(k * n, (k + 1) * n) for k in range(3)]
    epoch = f.prepare_epoch(x, y, order)
    for b in (ref, f):
        b.init_optimizer(config)
    for k, idx in enumerate(order):
        for b in (ref, f):
            b.set_masks(dropout_masks(spec, 0, k, n))
        ref.train_step(ref.prepare_batch(x[idx], y[idx]))
        f.train_steps(epoch, k, k + 1, [config.lr])
    assert_agree(f.get_params(), ref.get_params())
    assert_agree(f.get_buffers(), ref.get_buffers())
    start = init_buffers(spec, "float64")
    assert not any(np.allclose(v, start[k]) for k, v in f.get_buffers().items())


def trained(spec, mode, dtype="float64"):
    """Params, buffers and losses after an epoch of Adam over 27 images in batches of 4, dropout on its own RNG."""
    x, y = batch(spec, 27, seed=4)
    b = FlaxBackend(spec, init_params(spec, 0, dtype), dtype=dtype, mode=mode, seed=5)
    b.init_optimizer(OptimizerConfig("adam", lr=1e-2))
    order = batch_order(27, 4, 0, 0)  # 6 full batches and one of 3
    epoch = b.prepare_epoch(x, y, order)
    losses = [b.train_steps(epoch, a, z, [1e-2] * (z - a)) for a, z in [(0, 2), (2, 5), (5, 7)]]
    return b.get_params(), b.get_buffers(), np.concatenate([np.asarray(seg) for seg in losses])


def test_all_four_modes_train_alike_on_their_own_rng():
    runs = {mode: trained(FRESH, mode) for mode in MODES}
    params, buffers, losses = runs["step"]
    for mode, (p, b, l) in runs.items():
        np.testing.assert_allclose(l, losses, rtol=1e-10, err_msg=mode)
        for k in params:
            np.testing.assert_allclose(p[k], params[k], rtol=1e-9, atol=1e-12, err_msg=f"{mode} {k}")
        for k in buffers:
            np.testing.assert_allclose(b[k], buffers[k], rtol=1e-9, atol=1e-12, err_msg=f"{mode} {k}")
    start = init_buffers(FRESH, "float64")
    assert all(np.isfinite(v).all() and not np.array_equal(v, start[k]) for k, v in buffers.items())


@pytest.mark.parametrize("mode", ["step", "scan"])
def test_own_rng_drops_other_units_at_every_step(mode):
    x, y = batch(FRESH, 4, seed=6)
    b = FlaxBackend(FRESH, init_params(FRESH, 0, "float64"), dtype="float64", mode=mode)
    b.init_optimizer(OptimizerConfig("sgd", lr=0.0))
    # The same batch twice at lr 0: a training pass normalises with the batch's own statistics, so only
    # the dropped units can make the two losses differ.
    epoch = b.prepare_epoch(x, y, [np.arange(4), np.arange(4)])
    first, second = (float(v) for v in b.train_steps(epoch, 0, 2, [0.0, 0.0]))
    assert first != second
    assert (b._scan if b.fused else b._step)._cache_size() == 1  # the step count is an argument, not a constant
    assert b.loss_and_grads(x, y)[0] != b.loss_and_grads(x, y)[0]
    buffers = b.get_buffers()
    assert all(np.isfinite(v).all() for v in buffers.values())
    assert not np.allclose(buffers["9.running_var"], 1)


def test_float32_keeps_its_buffers_float32():
    p, buffers, losses = trained(FRESH, "scan", "float32")
    assert all(v.dtype == np.float32 for v in (*p.values(), *buffers.values()))
    assert np.isfinite(losses).all() and losses.dtype == np.float32


def test_masks_are_checked_and_none_returns_to_the_own_rng():
    x, y = batch(FRESH, 6)
    b = FlaxBackend(FRESH, init_params(FRESH, 0, "float64"), dtype="float64")
    with pytest.raises(ValueError, match="dropout masks do not match"):
        b.set_masks({"4.mask": np.ones((6, 5, 3, 2), bool)})
    b.set_masks(dropout_masks(FRESH, 0, 0, 6))
    masked = b.loss_and_grads(x, y)[0]
    assert b.loss_and_grads(x, y)[0] == masked  # the same masks, the same loss
    b.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    with pytest.raises(BackendError, match="masks for a batch of 6.*batch of 4"):
        b.train_step(b.prepare_batch(*batch(FRESH, 4)))
    b.set_masks(None)
    assert b.loss_and_grads(x, y)[0] != masked


def test_specs_without_the_new_layers_carry_no_state_and_draw_nothing():
    spec = SPECS["tinycnn"]
    b = FlaxBackend(spec, init_params(spec, 0))
    assert b.get_buffers() == {} and b.batch_stats == {}
    b.set_buffers({})
    b.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    data = b.prepare_batch(*batch(spec))
    assert "random_bits" not in step_jaxpr(b, data)
    f = FlaxBackend(FRESH, init_params(FRESH, 0))
    f.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    assert "random_bits" in step_jaxpr(f, f.prepare_batch(*batch(FRESH)))


def step_jaxpr(b, data) -> str:
    """The jitted train step's program for one batch, as text."""
    return str(jax.make_jaxpr(b._step)(b.params, b.opt_state, b.batch_stats, *data, b._lr, b._noise(len(data[0]))))


def test_every_mode_note_names_the_batchnorm_module():
    assert all("batchnorm" in note and "PyTorch" in note for note in FlaxBackend.MODE_NOTES.values())


@pytest.mark.parametrize("pads", [((1, 2), (0, 1)), ((2, 1), (1, 2))])
def test_conv_gradients_with_asymmetric_pads_equal_xla_own(pads):
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((2, 9, 8, 3)), rng.standard_normal((4, 4, 3, 5))

    def loss(conv):
        return lambda x, k: (conv(x, k, (2, 2), pads, dimension_numbers=flax_kernels.NHWC) ** 3).sum()
    jax.config.update("jax_enable_x64", True)  # as every float64 backend does
    want = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, kernel)
    got = jax.grad(loss(flax_kernels.conv_general_dilated), (0, 1))(x, kernel)
    for g, r in zip(got, want):
        assert g.shape == r.shape and relerr(np.asarray(g), np.asarray(r)) <= 1e-12

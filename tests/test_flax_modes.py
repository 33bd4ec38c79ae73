"""Flax's step and scan modes train identically, stock or tuned, and its rewritten gradients equal XLA's own."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

from jax import lax  # noqa: E402

from fwbench.backends import flax_kernels  # noqa: E402
from fwbench.backends.base import BackendError, OptimizerConfig  # noqa: E402
from fwbench.backends.flax_backend import FlaxBackend  # noqa: E402
from fwbench.harness.data import batch_order  # noqa: E402
from fwbench.harness.agreement.ties import tie_case  # noqa: E402
from fwbench.models.params import init_params  # noqa: E402
from specs import SPECS, batch, relerr  # noqa: E402


def trained(spec, mode: str, n: int, size: int, cuts: list[int]) -> tuple[dict, np.ndarray]:
    """Params and losses after one epoch of Adam over n images, train_steps called on the given segments."""
    x, y = batch(spec, n, seed=4)
    b = FlaxBackend(spec, init_params(spec, 0, "float64"), dtype="float64", mode=mode)
    b.init_optimizer(OptimizerConfig("adam", lr=1e-2))
    order = batch_order(n, size, 0, 0)
    epoch = b.prepare_epoch(x, y, order)
    bounds = [0, *cuts, len(order)]
    losses = [np.asarray([float(v) for v in b.train_steps(epoch, a, z, [1e-2 * (1 - s / 10) for s in range(a, z)])])
              for a, z in zip(bounds, bounds[1:])]
    return b.get_params(), np.concatenate(losses)


@pytest.mark.parametrize("step,scan", [("step", "scan"), ("step-tuned", "scan-tuned")])
@pytest.mark.parametrize("name", ["tinycnn", "wide"])
def test_scan_trains_exactly_like_step_with_a_short_last_batch(name, step, scan):
    spec = SPECS[name]
    step_params, step_losses = trained(spec, step, 27, 4, [])          # 6 full batches and one of 3
    scan_params, scan_losses = trained(spec, scan, 27, 4, [2, 5])      # segments 0-2, 2-5, 5-7
    assert len(scan_losses) == 7
    np.testing.assert_allclose(scan_losses, step_losses, rtol=1e-12)
    for k in step_params:
        np.testing.assert_allclose(scan_params[k], step_params[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert not np.allclose(scan_params["0.weight"], init_params(spec, 0, "float64")["0.weight"])


@pytest.mark.parametrize("name", ["tinycnn", "cnn", "wide"])
@pytest.mark.parametrize("tied", [False, True])
def test_stock_and_tuned_give_the_same_loss_and_gradients(name, tied):
    spec = SPECS[name]
    x, y = batch(spec)
    p = init_params(spec, 0, "float64")
    if tied:  # relu zeros and max-pool ties: the kernels route them as flax's stock pool does
        x, y, p = tie_case(spec, p, 4, 0)
    (ls, gs), (lt, gt) = (FlaxBackend(spec, p, dtype="float64", mode=m).loss_and_grads(x, y)
                          for m in ("step", "step-tuned"))
    assert lt == pytest.approx(ls, rel=1e-14)
    for k in gs:
        assert relerr(gt[k], gs[k]) <= 1e-12, k


def test_modes_are_declared_and_checked():
    spec = SPECS["tinycnn"]
    assert FlaxBackend.modes == ("step", "scan", "step-tuned", "scan-tuned")
    assert set(FlaxBackend.MODE_NOTES) == set(FlaxBackend.modes)
    assert all(note and "\n" not in note for note in FlaxBackend.MODE_NOTES.values())
    default = FlaxBackend(spec, init_params(spec, 0))
    assert (default.mode, default.fused, default.kernels) == ("step", False, False)
    for mode, fused, kernels in [("scan", True, False), ("step-tuned", False, True), ("scan-tuned", True, True)]:
        b = FlaxBackend(spec, init_params(spec, 0), mode=mode)
        assert (b.fused, b.kernels, b.model.kernels) == (fused, kernels, kernels), mode
    with pytest.raises(BackendError, match="no mode 'graph'; choose one of step, scan, step-tuned, scan-tuned"):
        FlaxBackend(spec, init_params(spec, 0), mode="graph")


def test_scan_runs_nothing_for_an_empty_stretch_at_the_end():
    spec = SPECS["tinycnn"]
    x, y = batch(spec, 10)
    b = FlaxBackend(spec, init_params(spec, 0), mode="scan")
    b.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    epoch = b.prepare_epoch(x, y, batch_order(10, 4, 0, 0))  # 4, 4 and a short 2
    before = b.get_params()
    assert len(b.train_steps(epoch, 3, 3, [])) == 0
    assert all(np.array_equal(v, before[k]) for k, v in b.get_params().items())


def test_scan_refuses_steps_outside_the_epoch():
    spec = SPECS["tinycnn"]
    x, y = batch(spec, 8)
    b = FlaxBackend(spec, init_params(spec, 0), mode="scan")
    b.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    epoch = b.prepare_epoch(x, y, batch_order(8, 4, 0, 0))
    with pytest.raises(BackendError, match="steps 1..3 .* an epoch of 2 steps"):
        b.train_steps(epoch, 1, 3, [0.1, 0.1])


@pytest.mark.parametrize("n,h,w,c,o,k,s,p", [(4, 28, 28, 1, 8, 3, 1, 0), (3, 13, 10, 2, 5, 3, 2, 1),
                                             (2, 8, 8, 2, 3, 2, 3, 0)])
def test_conv_gradients_equal_xla_own(n, h, w, c, o, k, s, p):
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((n, h, w, c)).astype(np.float32), rng.standard_normal((k, k, c, o)).astype(np.float32)

    def loss(conv):
        return lambda x, kernel: (conv(x, kernel, (s, s), ((p, p), (p, p)), dimension_numbers=flax_kernels.NHWC) ** 3).sum()
    want = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, kernel)
    got = jax.grad(loss(flax_kernels.conv_general_dilated), (0, 1))(x, kernel)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_padding_given_as_a_word_takes_the_rewritten_gradient_too(padding):
    x, kernel = np.ones((2, 9, 9, 1), np.float32), np.ones((3, 3, 1, 4), np.float32)

    def loss(conv):
        return lambda k: (conv(x, k, (2, 2), padding, dimension_numbers=flax_kernels.NHWC) ** 2).sum()
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(flax_kernels.conv_general_dilated)))(kernel))
    assert "custom_vjp_call" in jaxpr
    np.testing.assert_allclose(jax.grad(loss(flax_kernels.conv_general_dilated))(kernel),
                               jax.grad(loss(lax.conv_general_dilated))(kernel), rtol=1e-6)


@pytest.mark.parametrize("shape,size,step", [((2, 26, 26, 3), 2, 2), ((2, 7, 9, 2), 2, 2), ((1, 9, 9, 1), 3, 2)])
def test_max_pool_gradient_goes_to_the_first_maximum_like_xla(shape, size, step):
    x = np.round(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)  # many exact ties

    def loss(pool):
        return lambda x: (pool(x) ** 2).sum()
    want = jax.grad(loss(lambda x: lax.reduce_window(x, -np.inf, lax.max, (1, size, size, 1), (1, step, step, 1),
                                                     "VALID")))(x)
    got = jax.grad(loss(lambda x: flax_kernels.max_pool(x, size, step)))(x)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode,custom", [("step", 0), ("scan", 0), ("step-tuned", 2), ("scan-tuned", 2)])
def test_only_tuned_modes_use_the_rewritten_gradients(mode, custom):
    spec = SPECS["cnn"]
    b = FlaxBackend(spec, init_params(spec, 0), mode=mode)
    x = np.zeros((2, 28, 28, 1), np.float32)
    jaxpr = str(jax.make_jaxpr(lambda p: jax.grad(lambda q: b.model.apply({"params": q}, x).sum())(p))(b.params))
    # Tuned: the conv and the pool, not a silent fallback to stock ops. Stock: flax's own ops, whose
    # pool backward is XLA's select_and_scatter_add.
    assert jaxpr.count("custom_vjp_call") == custom
    assert ("select_and_scatter_add" in jaxpr) == (custom == 0)


@pytest.mark.parametrize("mode", ["scan", "scan-tuned"])
def test_scan_compiles_once_for_stretches_of_every_length(mode):
    spec = SPECS["tinycnn"]
    x, y = batch(spec, 30)
    b = FlaxBackend(spec, init_params(spec, 0), mode=mode)
    b.init_optimizer(OptimizerConfig("adam", lr=1e-3))
    epoch = b.prepare_epoch(x, y, batch_order(30, 4, 0, 0))  # 7 full batches and a short one
    for a, z in [(0, 3), (3, 5), (5, 8)]:
        b.train_steps(epoch, a, z, [1e-3] * (z - a))
    if not hasattr(b._scan, "_cache_size"):
        pytest.skip("this jax does not say how often a jitted function compiled")
    assert b._scan._cache_size() == 1

"""The flax backend: exact canonical round trips, and agreement with torch in float64."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

from fwbench.backends.base import BackendError, OptimizerConfig  # noqa: E402
from fwbench.backends.flax_backend import FlaxBackend  # noqa: E402
from fwbench.models.params import init_params  # noqa: E402
from specs import SPECS, batch, relerr  # noqa: E402


def ties(spec, p, n=6):
    """Inputs of 0/1 and weights on a 1/4 grid with zero bias: exact ReLU zeros and max-pool ties."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, (n, *spec.input)).astype(np.float64)
    q = {k: np.zeros_like(v) if k.endswith("bias") else np.round(v * 16) / 4 for k, v in p.items()}
    return x, rng.integers(0, spec.classes, n), q


def torch_backend():
    pytest.importorskip("torch")
    from fwbench.backends.torch_backend import TorchBackend
    return TorchBackend


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_round_trip_is_exact(name, dtype):
    spec = SPECS[name]
    p = init_params(spec, 3, dtype)
    got = FlaxBackend(spec, p, dtype=dtype).get_params()
    assert set(got) == set(p)
    for k in p:
        assert got[k].dtype == np.dtype(dtype) and np.array_equal(got[k], p[k]), k


@pytest.mark.parametrize("mode", ["step", "step-tuned"])  # stock flax ops, and fwbench's kernels
@pytest.mark.parametrize("name,tied", [("tinycnn", False), ("wide", False), ("wide", True), ("cnn", True)])
def test_forward_loss_and_grads_match_torch(name, tied, mode):
    spec = SPECS[name]
    p = init_params(spec, 0, "float64")
    x, y = batch(spec)
    if tied:
        x, y, p = ties(spec, p)
    t, f = torch_backend()(spec, p, dtype="float64"), FlaxBackend(spec, p, dtype="float64", mode=mode)
    assert relerr(f.forward(x), t.forward(x)) <= 1e-10
    (lt, gt), (lf, gf) = t.loss_and_grads(x, y), f.loss_and_grads(x, y)
    assert lf == pytest.approx(lt, rel=1e-10)
    for k in gt:
        assert gf[k].dtype == np.float64 and relerr(gf[k], gt[k]) <= 1e-10, k


@pytest.mark.parametrize("config", [OptimizerConfig("sgd", lr=0.1, momentum=0.9),
                                    OptimizerConfig("sgd", lr=0.1),
                                    OptimizerConfig("adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6)])
def test_optimizer_steps_match_torch_across_set_lr(config):
    spec = SPECS["wide"]
    p = init_params(spec, 0, "float64")
    x, y = batch(spec)
    backends = [torch_backend()(spec, p, dtype="float64"), FlaxBackend(spec, p, dtype="float64")]
    for b in backends:
        b.init_optimizer(config)
        data = b.prepare_batch(x, y)
        for lr in [config.lr, config.lr, config.lr / 4]:  # the last step also checks that set_lr keeps state
            b.set_lr(lr)
            b.train_step(data)
        b.synchronize()
    want, got = (b.get_params() for b in backends)
    for k in want:
        assert relerr(got[k], want[k]) <= 1e-10, k


def test_set_lr_changes_the_step_without_recompiling():
    spec = SPECS["tinycnn"]
    b = FlaxBackend(spec, init_params(spec, 0, "float64"), dtype="float64")
    b.init_optimizer(OptimizerConfig("sgd", lr=0.1))
    data = b.prepare_batch(*batch(spec))
    p0 = b.get_params()
    _, g = b.loss_and_grads(*batch(spec))
    b.train_step(data)
    p1 = b.get_params()
    assert all(relerr(p0[k] - p1[k], 0.1 * g[k]) <= 1e-12 for k in g)
    b.set_lr(0.0)
    b.train_step(data)
    assert all(np.array_equal(v, p1[k]) for k, v in b.get_params().items())
    assert b._step._cache_size() == 1  # the new lr is state, not a constant baked into the step


def test_native_init_is_seeded_flax_default():
    spec = SPECS["wide"]
    a, b, c = (FlaxBackend(spec, seed=s).get_params() for s in (0, 0, 1))
    canonical = init_params(spec, 0)
    assert {k: v.shape for k, v in a.items()} == spec.param_shapes()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a if k.endswith("weight"))
    assert not any(np.array_equal(a[k], canonical[k]) for k in a)
    assert all(not v.any() for k, v in a.items() if k.endswith("bias"))  # flax's zeros bias init


@pytest.mark.skipif("cuda" in FlaxBackend.devices(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_backend_error():
    with pytest.raises(BackendError, match="cuda"):
        FlaxBackend(SPECS["tinycnn"], device="cuda")


def test_unknown_optimizer_and_untrained_step_are_backend_errors():
    b = FlaxBackend(SPECS["tinycnn"], init_params(SPECS["tinycnn"]))
    with pytest.raises(BackendError, match="sgd, adam"):
        b.init_optimizer(OptimizerConfig("rmsprop"))
    with pytest.raises(BackendError, match="init_optimizer"):
        b.train_step(b.prepare_batch(*batch(SPECS["tinycnn"])))


def test_train_step_lowers_loss_and_keeps_float32_with_x64_on():
    spec = SPECS["tinycnn"]
    p = init_params(spec, 0, "float64")
    FlaxBackend(spec, p, dtype="float64")  # turns on jax_enable_x64 for the process
    b = FlaxBackend(spec, p, dtype="float32")  # float64 in, cast on load
    b.init_optimizer(OptimizerConfig("adam", lr=0.01))
    data = b.prepare_batch(*batch(spec, n=16))
    losses = [b.train_step(data) for _ in range(30)]
    b.synchronize()
    assert isinstance(losses[0], jax.Array) and losses[0].dtype == np.float32
    assert float(losses[-1]) < 0.5 * float(losses[0])
    leaves = jax.tree_util.tree_leaves((b.params, b.opt_state))
    assert all(v.dtype == np.float32 for v in leaves if np.issubdtype(v.dtype, np.floating))
    assert all(v.dtype == np.float32 for v in b.get_params().values())
    assert b.forward(batch(spec)[0]).dtype == np.float32

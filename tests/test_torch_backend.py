"""The torch backend against a NumPy oracle, finite differences and hand-written optimizer rules."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fwbench.backends.base import BackendError, OptimizerConfig  # noqa: E402
from fwbench.backends.torch_backend import TorchBackend  # noqa: E402
from fwbench.models.params import init_params  # noqa: E402
from specs import SPECS, batch, relerr  # noqa: E402
from fwbench.models.spec import Conv2D, Dense, Flatten, MaxPool2D  # noqa: E402

def windows(x, k, s):
    """Views x[:, :, i::s, j::s] for each kernel offset (i, j), cut to the output size."""
    oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return {(i, j): x[:, :, i:i + s * oh:s, j:j + s * ow:s] for i in range(k) for j in range(k)}


def numpy_forward(spec, p, x):
    """Canonical semantics written out directly: NCHW, OIHW conv, (in, out) dense, C,H,W flatten."""
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Conv2D):
            q = layer.padding
            xp = np.pad(x, ((0, 0), (0, 0), (q, q), (q, q)))
            w = p[f"{i}.weight"]
            x = sum(np.einsum("nchw,oc->nohw", v, w[:, :, a, b])
                    for (a, b), v in windows(xp, layer.kernel_size, layer.stride).items())
            x = x + p[f"{i}.bias"][None, :, None, None]
        elif isinstance(layer, MaxPool2D):
            x = np.max(np.stack(list(windows(x, layer.size, layer.step).values())), axis=0)
        elif isinstance(layer, Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, Dense):
            x = x @ p[f"{i}.weight"] + p[f"{i}.bias"]
        else:
            x = np.maximum(x, 0)
    return x


def cross_entropy(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_round_trip_is_exact(name, dtype):
    spec = SPECS[name]
    p = init_params(spec, 3, dtype)
    got = TorchBackend(spec, p, dtype=dtype).get_params()
    assert set(got) == set(p)
    for k in p:
        assert got[k].dtype == np.dtype(dtype) and np.array_equal(got[k], p[k]), k


@pytest.mark.parametrize("name", SPECS)
def test_forward_and_loss_match_numpy_oracle(name):
    spec = SPECS[name]
    p = init_params(spec, 0, "float64")
    x, y = batch(spec)
    b = TorchBackend(spec, p, dtype="float64")
    want = numpy_forward(spec, p, x)
    assert relerr(b.forward(x), want) <= 1e-12
    loss, _ = b.loss_and_grads(x, y)
    assert loss == pytest.approx(cross_entropy(want, y), rel=1e-12)


@pytest.mark.parametrize("name", ["tinycnn", "wide"])
def test_grads_match_finite_differences(name):
    spec = SPECS[name]
    p = init_params(spec, 0, "float64")
    x, y = batch(spec)
    _, grads = TorchBackend(spec, p, dtype="float64").loss_and_grads(x, y)
    rng, h = np.random.default_rng(2), 1e-6
    for key, g in grads.items():
        for idx in map(tuple, rng.integers(0, g.shape, size=(3, g.ndim))):
            up, down = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
            up[key][idx] += h
            down[key][idx] -= h
            fd = (cross_entropy(numpy_forward(spec, up, x), y) - cross_entropy(numpy_forward(spec, down, x), y)) / (2 * h)
            assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (key, idx)


def reference_steps(spec, p, x, y, config, lrs):
    """torch.optim's documented rules in NumPy, one step per lr in lrs."""
    oracle = TorchBackend(spec, p, dtype="float64")  # gradients only
    p = {k: v.copy() for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    (b1, b2), eps = config.betas, config.eps
    for t, lr in enumerate(lrs, start=1):
        oracle.set_params(p)
        _, g = oracle.loss_and_grads(x, y)
        for k in p:
            if config.name == "sgd":
                m[k] = config.momentum * m[k] + g[k]
                p[k] -= lr * m[k]
            else:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
                p[k] -= lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v2[k] / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("config", [OptimizerConfig("sgd", lr=0.1, momentum=0.9),
                                    OptimizerConfig("adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6)])
def test_optimizers_follow_the_documented_rules_across_set_lr(config):
    spec = SPECS["wide"]
    p = init_params(spec, 0, "float64")
    x, y = batch(spec)
    lrs = [config.lr, config.lr, config.lr / 4]  # the last step also checks that set_lr keeps state
    b = TorchBackend(spec, p, dtype="float64")
    b.init_optimizer(config)
    data = b.prepare_batch(x, y)
    for lr in lrs:
        b.set_lr(lr)
        b.train_step(data)
    want, got = reference_steps(spec, p, x, y, config, lrs), b.get_params()
    for k in want:
        assert relerr(got[k], want[k]) <= 1e-10, k


def test_set_lr_zero_freezes_params():
    spec = SPECS["tinycnn"]
    b = TorchBackend(spec, init_params(spec, 0, "float64"), dtype="float64")
    b.init_optimizer(OptimizerConfig("adam", lr=0.01))
    data = b.prepare_batch(*batch(spec))
    b.train_step(data)
    before = b.get_params()
    b.set_lr(0.0)
    b.train_step(data)
    assert all(np.array_equal(before[k], v) for k, v in b.get_params().items())


def test_native_init_is_seeded_and_leaves_global_rng_alone():
    spec = SPECS["tinycnn"]
    state = torch.get_rng_state()
    a, b, c = (TorchBackend(spec, seed=s).get_params() for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state())
    canonical = init_params(spec, 0)
    assert {k: v.shape for k, v in a.items()} == spec.param_shapes()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)
    assert not any(np.array_equal(a[k], canonical[k]) for k in a)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_backend_error():
    with pytest.raises(BackendError, match="cuda"):
        TorchBackend(SPECS["tinycnn"], device="cuda")


def test_unknown_optimizer_and_untrained_step_are_backend_errors():
    b = TorchBackend(SPECS["tinycnn"])
    with pytest.raises(BackendError, match="sgd, adam"):
        b.init_optimizer(OptimizerConfig("rmsprop"))
    with pytest.raises(BackendError, match="init_optimizer"):
        b.train_step(b.prepare_batch(*batch(SPECS["tinycnn"])))


def test_train_step_lowers_loss_and_keeps_float32():
    spec = SPECS["tinycnn"]
    b = TorchBackend(spec, init_params(spec, 0, "float64"), dtype="float32")  # float64 in, cast on load
    b.init_optimizer(OptimizerConfig("adam", lr=0.01))
    data = b.prepare_batch(*batch(spec, n=16))
    losses = [b.train_step(data) for _ in range(30)]
    b.synchronize()
    assert isinstance(losses[0], torch.Tensor) and not losses[0].requires_grad
    assert float(losses[-1]) < 0.5 * float(losses[0])
    assert all(v.dtype == np.float32 for v in b.get_params().values())
    assert b.forward(batch(spec)[0]).dtype == np.float32

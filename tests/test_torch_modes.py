"""The torch backend's execution modes: selection, the CPU refusal of cudagraphs, and each mode against eager."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fwbench import backends  # noqa: E402
from fwbench.backends.base import BackendError, OptimizerConfig  # noqa: E402
from fwbench.backends.torch_backend import TorchBackend  # noqa: E402
from fwbench.harness.session import make_backend  # noqa: E402
from fwbench.models.params import init_params  # noqa: E402
from specs import SPECS, batch  # noqa: E402

SGD = OptimizerConfig("sgd", lr=0.1, momentum=0.9)
ADAM = OptimizerConfig("adam", lr=0.01)
LRS = [0.1, 0.05, 0.02]  # a different lr every step: set_lr must neither be lost nor recompile


def trained(mode, config, steps, spec=SPECS["tinycnn"], ragged=False):
    """Params after `steps` steps from seed-0 weights at LRS (scaled to config.lr), the last batch 3 images if ragged."""
    b = TorchBackend(spec, init_params(spec, 0, "float32"), mode=mode)
    b.init_optimizer(config)
    for i in range(steps):
        x, y = batch(spec, n=3 if ragged and i == steps - 1 else 8, seed=i)
        b.set_lr(LRS[i % len(LRS)] * config.lr / LRS[0])
        b.train_step(b.prepare_batch(x.astype(np.float32), y))
    return b


def maxdiff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_modes_are_declared_with_eager_the_default():
    assert TorchBackend.modes == ("eager", "channels_last", "compile", "cudagraphs")
    assert TorchBackend(SPECS["tinycnn"]).mode == "eager"
    with pytest.raises(BackendError, match="choose one of eager, channels_last, compile, cudagraphs"):
        TorchBackend(SPECS["tinycnn"], mode="jit")


@pytest.mark.parametrize("mode", ["eager", "channels_last", "compile"])
def test_name_at_mode_reaches_the_backend(mode):
    assert backends.load(f"torch@{mode}") is TorchBackend
    b = make_backend(f"torch@{mode}", SPECS["tinycnn"], device="cpu", dtype="float32", seed=0, init="canonical")
    assert b.mode == mode


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cudagraphs_on_the_cpu_is_a_one_line_error_naming_the_flag(device):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto resolves to cuda on this machine")
    with pytest.raises(BackendError, match="needs --device cuda") as e:
        make_backend("torch@cudagraphs", SPECS["tinycnn"], device=device, dtype="float32", seed=0, init="canonical")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cudagraphs_on_cuda_without_a_gpu_is_the_usual_device_error():
    with pytest.raises(BackendError, match="no GPU was found"):
        TorchBackend(SPECS["tinycnn"], device="cuda", mode="cudagraphs")


def test_channels_last_stores_nhwc_and_keeps_the_canonical_boundary():
    spec = SPECS["wide"]  # 3 input channels: with 1, NCHW and NHWC are the same layout
    p = init_params(spec, 3, "float32")
    b = TorchBackend(spec, p, mode="channels_last")
    conv = next(w for w in b.model.parameters() if w.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, y = b.prepare_batch(*batch(spec))
    assert x.is_contiguous(memory_format=torch.channels_last)
    got = b.get_params()
    assert all(np.array_equal(got[k], p[k]) for k in p)
    assert all(v.flags.c_contiguous for v in got.values() if v.ndim == 4)  # NCHW order again at the boundary


@pytest.mark.parametrize("config", [SGD, ADAM])
def test_channels_last_trains_like_eager(config):
    eager, nhwc = trained("eager", config, 3), trained("channels_last", config, 3)
    assert maxdiff(nhwc.get_params(), eager.get_params()) <= 1e-5
    x, y = batch(SPECS["tinycnn"])
    assert np.allclose(nhwc.forward(x), eager.forward(x), atol=1e-5)
    (la, ga), (lb, gb) = nhwc.loss_and_grads(x, y), eager.loss_and_grads(x, y)
    assert la == pytest.approx(lb, abs=1e-5) and maxdiff(ga, gb) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("config", [SGD, ADAM], ids=["sgd", "adam"])
def test_compile_mode_really_compiles_and_matches_eager(config):
    """Real torch.compile: lazy, no recompile for set_lr or the ragged batch, eager's numbers to 1e-5 (float32)."""
    import torch._dynamo.utils
    spec = SPECS["tinycnn"]
    b = TorchBackend(spec, init_params(spec, 0, "float32"), mode="compile")
    b.init_optimizer(config)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert b._compiled is None  # nothing compiled before the first step, where the harness times it
    x, y = batch(spec, n=8, seed=0)
    b.set_lr(LRS[0] * config.lr / LRS[0])
    b.train_step(b.prepare_batch(x.astype(np.float32), y))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > frames  # dynamo captured graphs
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in (1, 2):
            x, y = batch(spec, n=3 if i == 2 else 8, seed=i)  # the last batch is ragged
            b.set_lr(LRS[i] * config.lr / LRS[0])
            b.train_step(b.prepare_batch(x.astype(np.float32), y))
    want = trained("eager", config, 3, ragged=True)
    assert maxdiff(b.get_params(), want.get_params()) <= 1e-5
    # The eager methods share the compiled step's parameters.
    x, y = batch(spec)
    assert np.allclose(b.forward(x), want.forward(x), atol=1e-5)
    b.set_params(want.get_params())
    (la, ga), (lb, gb) = b.loss_and_grads(x, y), want.loss_and_grads(x, y)
    assert la == pytest.approx(lb, abs=1e-6) and maxdiff(ga, gb) <= 1e-6


@pytest.mark.slow
def test_compiled_adam_is_eager_adam_to_float64_precision():
    """Every update as eager torch.optim.Adam's, across set_lr; a float32 step count made them 7e-6 off."""
    spec = SPECS["tinycnn"]
    start = init_params(spec, 0, "float64")
    got = {}
    for mode in ("eager", "compile"):
        b = TorchBackend(spec, start, dtype="float64", mode=mode)
        b.init_optimizer(ADAM)
        for i, lr in enumerate([0.01, 0.003, 0.02]):
            x, y = batch(spec, n=8, seed=i)
            b.set_lr(lr)
            b.train_step(b.prepare_batch(x, y))
        got[mode] = b.get_params()
    for k in start:
        want = got["eager"][k] - start[k]
        assert np.linalg.norm(got["compile"][k] - start[k] - want) <= 1e-10 * np.linalg.norm(want), k
    assert {s["step"].dtype for s in b.opt.state.values()} == {torch.float64}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("config", [SGD, ADAM], ids=["sgd", "adam"])
def test_cudagraphs_matches_eager_on_the_gpu(config):
    spec = SPECS["tinycnn"]
    b = TorchBackend(spec, init_params(spec, 0, "float32"), device="cuda", mode="cudagraphs")
    e = TorchBackend(spec, init_params(spec, 0, "float32"), device="cuda")
    losses = []
    for backend in (b, e):
        backend.init_optimizer(config)
        for i in range(4):
            x, y = batch(spec, n=3 if i == 3 else 8, seed=i)
            backend.set_lr(LRS[i % 3] * config.lr / LRS[0])
            losses.append(backend.train_step(backend.prepare_batch(x.astype(np.float32), y)))
    # Losses held across steps keep their values: the graph's output was copied out before the next replay.
    assert np.allclose([float(v) for v in losses[:4]], [float(v) for v in losses[4:]], atol=1e-5)
    assert maxdiff(b.get_params(), e.get_params()) <= 1e-5

"""The keras backend: conformant in every mode, its loop mode trains like its graph mode, and nothing retraces."""
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from fwbench.backends.base import OptimizerConfig  # noqa: E402
from fwbench.backends.keras_backend import KerasBackend  # noqa: E402
from fwbench.harness.conformance import run_conformance  # noqa: E402
from fwbench.harness.data import batch_order  # noqa: E402
from fwbench import models  # noqa: E402
from fwbench.models.params import init_params  # noqa: E402
from specs import SPECS, batch  # noqa: E402

# Batch norm on a map and on features, "same" padding at stride 2: running statistics move in every step.
NORMED = models.parse({"name": "normed", "input": [2, 7, 6], "classes": 3, "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 4, "stride": 2, "padding": "same"},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 5},
    {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3},
    {"type": "tanh"},
    {"type": "dense", "units": 3},
]})


@pytest.mark.parametrize("mode", [m for m in KerasBackend.modes if m != "native"])
def test_every_mode_passes_the_conformance_kit(mode):
    doc = run_conformance(f"keras@{mode}")
    assert doc["passed"], [c for c in doc["checks"] if c["status"] != "pass"]
    assert {c["status"] for c in doc["checks"]} == {"pass"}  # float64 everywhere, canonical ties


def test_native_optimizers_fail_only_the_rows_that_update():
    failed = {c["name"] for c in run_conformance("keras@native")["checks"] if c["status"] != "pass"}
    assert {"optimizer/adam", "optimizer/sgd momentum with set_lr", "training/an epoch through train_steps"} <= failed
    assert all(name.startswith(("optimizer/", "training/")) or name.endswith(": training steps") for name in failed)


def test_native_adam_adds_epsilon_before_the_bias_correction():
    spec = SPECS["tinycnn"]
    x, y = batch(spec, 8)
    p0 = init_params(spec, 0, "float64")
    b = KerasBackend(spec, p0, dtype="float64", mode="native")
    _, grads = b.loss_and_grads(x, y)
    b.init_optimizer(OptimizerConfig("adam", lr=0.01))
    b.train_step(b.prepare_batch(x, y))
    # Keras's first step: lr sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps), m = (1 - b1) g, v = (1 - b2) g^2. In
    # its step size the learning rate and betas pass through float32 even in a float64 model (tf.cast of a Python
    # float); its moments take the betas exact. Measured: 6.7e-6 of the update from these casts alone.
    lr, b1, b2 = (float(np.float32(v)) for v in (0.01, 0.9, 0.999))
    for k, g in grads.items():
        m, v = (1 - 0.9) * g, (1 - 0.999) * g * g
        want = p0[k] - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(b.get_params()[k], want, rtol=1e-12, atol=1e-15, err_msg=k)


def trained(spec, mode: str, n: int, size: int, cuts: list[int], config: OptimizerConfig):
    """Params, buffers and losses after one epoch over n images, train_steps called on the given segments."""
    x, y = batch(spec, n, seed=4)
    b = KerasBackend(spec, init_params(spec, 0, "float64"), dtype="float64", mode=mode)
    b.init_optimizer(config)
    order = batch_order(n, size, 0, 0)
    epoch = b.prepare_epoch(x, y, order)
    bounds = [0, *cuts, len(order)]
    rates = [[config.lr * (1 - s / 10) for s in range(a, z)] for a, z in zip(bounds, bounds[1:])]
    losses = [np.asarray([float(v) for v in b.train_steps(epoch, a, z, r)])
              for (a, z), r in zip(zip(bounds, bounds[1:]), rates)]
    return b.get_params(), b.get_buffers(), np.concatenate(losses)


@pytest.mark.parametrize("config", [OptimizerConfig("adam", lr=1e-2), OptimizerConfig("sgd", lr=0.05, momentum=0.9)])
@pytest.mark.parametrize("name", ["tinycnn", "normed"])
def test_loop_trains_exactly_like_graph_with_a_short_last_batch(name, config):
    spec = SPECS[name] if name in SPECS else NORMED
    graph_params, graph_buffers, graph_losses = trained(spec, "graph", 27, 4, [], config)   # 6 batches of 4, 1 of 3
    loop_params, loop_buffers, loop_losses = trained(spec, "loop", 27, 4, [2, 5], config)   # segments 0-2, 2-5, 5-7
    assert len(loop_losses) == 7
    np.testing.assert_allclose(loop_losses, graph_losses, rtol=1e-12)
    for k in graph_params:
        np.testing.assert_allclose(loop_params[k], graph_params[k], rtol=1e-10, atol=1e-12, err_msg=k)
    for k in graph_buffers:
        np.testing.assert_allclose(loop_buffers[k], graph_buffers[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert not np.allclose(loop_params["0.weight"], init_params(spec, 0, "float64")["0.weight"])


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_a_new_learning_rate_traces_nothing_again(mode):
    spec = SPECS["tinycnn"]
    b = KerasBackend(spec, init_params(spec, 0, "float32"), mode=mode)
    b.init_optimizer(OptimizerConfig("adam", lr=1e-3))
    prepared = b.prepare_batch(*batch(spec, 4))
    for lr in (1e-3, 5e-4, 2e-4):
        b.set_lr(lr)
        b.train_step(prepared)
    assert b._step.experimental_get_tracing_count() == 1


def test_adam_scalars_stay_float64():
    spec = SPECS["tinycnn"]
    x, y = batch(spec, 8)
    p0 = init_params(spec, 0, "float64")
    b = KerasBackend(spec, p0, dtype="float64")
    _, grads = b.loss_and_grads(x, y)
    b.init_optimizer(OptimizerConfig("adam", lr=0.01))
    b.train_step(b.prepare_batch(x, y))
    for k, g in grads.items():  # torch's first Adam step: lr * g / (|g| + eps)
        want = p0[k] - 0.01 * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(b.get_params()[k], want, rtol=1e-13, atol=1e-16, err_msg=k)

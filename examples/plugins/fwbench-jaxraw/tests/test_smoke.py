"""One direct check: jaxraw matches fwbench's float64 NumPy engine on tinycnn, before and after Adam steps."""
import numpy as np

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.models.params import init_params

from fwbench_jaxraw import JaxRawBackend


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_matches_the_numpy_engine_in_float64():
    spec = models.get("tinycnn")
    params = init_params(spec, 0, "float64")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, *spec.input)), rng.integers(0, spec.classes, 8)
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

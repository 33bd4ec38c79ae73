"""The training loop: evaluation points, curves, time-to-accuracy and the clock."""
import numpy as np

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.recipe import Recipe
from fwbench.harness.train import eval_points, train
from fwbench.models.params import init_params


def test_eval_points_spread_and_end_on_the_last_step():
    assert eval_points(10, 1) == {9}
    assert eval_points(10, 4) == {1, 4, 7, 9}  # after 2.5 -> 2, 5, 7.5 -> 8 and 10 steps
    assert eval_points(3, 8) == {0, 1, 2}


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32) * 0.1
    x[np.arange(n), 0, y, y] += 3.0  # a learnable signal: the label marks a pixel
    return x, y


def test_curves_and_time_to_accuracy():
    spec = models.get("mlp")
    x, y = data()
    backend = NumpyBackend(spec, init_params(spec, 0))
    result = train(backend, Recipe(epochs=2, batch_size=32, optimizer=OptimizerConfig(lr=0.01)), x, y, x[:64], y[:64], progress=False,
                   evals_per_epoch=4, target=0.5)
    assert len(result.accuracy_curve) == 8
    seconds, fractions, accs = zip(*result.accuracy_curve)
    assert list(seconds) == sorted(seconds) and fractions[-1] == 2.0 and fractions[0] == 0.25
    assert accs[-1] >= 0.9  # the signal is easy
    first_hit = next(s for s, _, a in result.accuracy_curve if a >= 0.5)
    assert result.time_to_accuracy == first_hit
    assert result.epochs[-1].test_accuracy == accs[-1]
    # training time only: the epochs add up to the last point of the curve
    assert abs(sum(e.epoch_seconds for e in result.epochs) - seconds[-1]) < 1e-9
    steps, losses = zip(*result.loss_curve)
    assert steps[-1] == 16 and len(steps) == 8 and losses[-1] < losses[0]


def test_unreached_target_leaves_time_to_accuracy_empty():
    spec = models.get("mlp")
    x, y = data(64)
    result = train(NumpyBackend(spec, init_params(spec, 0)), Recipe(epochs=1, batch_size=32), x, y, x, y,
                   progress=False, target=1.01)
    assert result.time_to_accuracy is None and len(result.accuracy_curve) == 1

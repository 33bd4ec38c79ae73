"""The training loop every backend runs: same batches, same order, same schedule."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from fwbench.backends.base import Backend
from fwbench.harness.data.augment import random_shift
from fwbench.harness.data import batch_order
from fwbench.harness.progress import Progress
from fwbench.harness.recipe import Recipe


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf, ended an epoch far above its start, or a parameter stopped being finite."""


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    test_accuracy: float
    epoch_seconds: float  # training steps only: batches were on the device before the clock started


@dataclass
class TrainResult:
    epochs: list[EpochLog] = field(default_factory=list)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (global step, mean loss since last point)
    accuracy_curve: list[tuple[float, float, float]] = field(default_factory=list)  # (train s, epochs, accuracy)
    time_to_accuracy: float | None = None  # training seconds until test accuracy first reached the target

    @property
    def test_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy if self.epochs else float("nan")


# How often pending losses are read back: often enough to stop soon after a NaN,
# rarely enough not to stall an asynchronous device every step.
CHECK_EVERY = 50
# An epoch that ends with its loss this many times its start (or chance level, ln(classes), if that is
# larger) has diverged: a learning run's loss falls, and a finite 1e22 is as broken as a NaN.
DIVERGED = 10.0


def evaluate(backend: Backend, x: np.ndarray, y: np.ndarray, chunk: int = 1000) -> float:
    """Test accuracy of the backend's current parameters."""
    correct = 0
    for i in range(0, len(x), chunk):
        logits = backend.forward(x[i:i + chunk])
        correct += int((np.asarray(logits).argmax(axis=1) == y[i:i + chunk]).sum())
    return correct / len(x)


def _check(losses: list, epoch: int, first_step: int) -> list[float]:
    """The pending losses as floats; TrainingDiverged names the first non-finite step."""
    values = [float(loss) for loss in losses]
    for k, value in enumerate(values):
        if not math.isfinite(value):
            raise TrainingDiverged(f"training diverged: loss became {value} at epoch {epoch}, "
                                   f"step {first_step + k}; try a smaller --lr")
    return values


def check_diverged(backend: Backend, start: float, last: float, chance: float, epoch: int, lr: float) -> None:
    """Off the clock, after an epoch: TrainingDiverged on a loss far above its start or a non-finite parameter."""
    fix = f"try a smaller --lr than {lr:g}"
    limit = DIVERGED * max(start, chance)
    if last > limit:
        raise TrainingDiverged(f"training diverged: the loss rose from {start:.3g} at the first step to {last:.3g} "
                               f"at the end of epoch {epoch} (the limit is {limit:.3g}); {fix}")
    try:
        params = backend.get_params()
    except NotImplementedError:  # a plugin without it is still checked by its losses
        return
    bad = next((k for k, v in params.items() if not np.isfinite(v).all()), None)
    if bad is not None:
        raise TrainingDiverged(f"training diverged: parameter '{bad}' is not finite after epoch {epoch}; {fix}")


def eval_points(steps: int, evals_per_epoch: int) -> set[int]:
    """Step indices after which to evaluate: evenly spread, always including the epoch's last step."""
    return {max(1, round(k * steps / evals_per_epoch)) - 1 for k in range(1, evals_per_epoch + 1)}


def segments(steps: int, evals: set[int], chunk: int | None) -> list[tuple[int, int]]:
    """[start, stop) runs of steps ending at each evaluation point, cut every `chunk` steps unless chunk is None."""
    cuts = {e + 1 for e in evals} | {steps}
    if chunk:
        cuts |= set(range(chunk, steps, chunk))
    bounds = [0, *sorted(c for c in cuts if 0 < c <= steps)]
    return list(zip(bounds, bounds[1:]))


def train(backend: Backend, recipe: Recipe, train_x: np.ndarray, train_y: np.ndarray,
          test_x: np.ndarray, test_y: np.ndarray, *, seed: int = 0, progress: bool = True,
          on_epoch=None, evals_per_epoch: int = 1, target: float | None = None) -> TrainResult:
    """Train with the recipe, evaluating on the test set evals_per_epoch times an epoch (off the clock)."""
    backend.init_optimizer(recipe.optimizer)
    steps_per_epoch = math.ceil(len(train_x) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    result, train_seconds, first = TrainResult(), 0.0, None
    chance = math.log(max(2, int(train_y.max()) + 1)) if len(train_y) else math.log(2)
    for epoch in range(1, recipe.epochs + 1):
        order = batch_order(len(train_x), recipe.batch_size, seed, epoch - 1)
        images = random_shift(train_x, recipe.shift, seed, epoch - 1)
        batches = backend.prepare_epoch(images, train_y, order)  # before the clock starts
        evals = eval_points(len(order), evals_per_epoch)
        # A fused backend runs each stretch between evaluations in one call; others are read back
        # every CHECK_EVERY steps, so a NaN stops training soon after it appears.
        runs = segments(len(order), evals, None if backend.fused else CHECK_EVERY)
        bar = Progress(len(order), f"epoch {epoch}/{recipe.epochs}", enabled=progress)
        loss_sum, epoch_seconds, accuracy = 0.0, 0.0, float("nan")
        done_before = (epoch - 1) * steps_per_epoch
        lrs = [recipe.lr_at(done_before + s, total) for s in range(len(order))]
        start = time.perf_counter()
        for a, b in runs:
            losses = backend.train_steps(batches, a, b, lrs[a:b])
            for c in range(a, b, CHECK_EVERY):
                end = min(b, c + CHECK_EVERY)
                values = _check(losses[c - a:end - a], epoch, c)
                first = values[0] if first is None else first
                chunk = sum(values)
                loss_sum += chunk
                result.loss_curve.append((done_before + end, chunk / (end - c)))
            bar.update(b, f"loss {loss_sum / b:.4f}")
            if b - 1 in evals:
                backend.synchronize()
                epoch_seconds += time.perf_counter() - start
                accuracy = evaluate(backend, test_x, test_y)
                elapsed = train_seconds + epoch_seconds
                result.accuracy_curve.append((elapsed, epoch - 1 + b / len(order), accuracy))
                if target is not None and result.time_to_accuracy is None and accuracy >= target:
                    result.time_to_accuracy = elapsed
                start = time.perf_counter()
        bar.close()
        train_seconds += epoch_seconds
        log = EpochLog(epoch, loss_sum / len(order), accuracy, epoch_seconds)
        result.epochs.append(log)
        if on_epoch:
            on_epoch(log)
        check_diverged(backend, first, result.loss_curve[-1][1], chance, epoch, recipe.optimizer.lr)
    return result

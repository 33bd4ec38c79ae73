"""Optimizer rows (SGD with momentum, Adam, set_lr) against the reference update, and a training smoke test."""
from __future__ import annotations

import math

import numpy as np

from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.conformance.cases import SEED, layer_of, params_of, spec_of
from fwbench.harness.conformance.context import Context, Outcome, cast
from fwbench.harness.conformance.measure import outcome

CASE = "tinycnn"
STEPS = 3
CONFIGS = {
    "sgd momentum 0.9": OptimizerConfig("sgd", lr=0.05, momentum=0.9),
    "adam": OptimizerConfig("adam", lr=0.01),
}
# Relative L2 error of each parameter's total update over the steps (p3 - p0), not of p3: an update is
# ~1e-2 of its parameter, so comparing parameters would hide an update that is 1% wrong. Measured on
# numpy, torch (eager, channels_last, compile) and flax (step, scan): float64 at most 2.4e-15. float32 at
# most 1.3e-6 (SGD) and 7.2e-6 (Adam, flax): the update is a difference of nearby float32 numbers, and
# Adam divides by sqrt(v), which turns the rounding of a near-zero gradient into an lr-sized step; the
# float32 bounds leave 100x for that.
UPDATE_TOL = {("float64", "sgd"): 1e-10, ("float64", "adam"): 1e-10,
              ("float32", "sgd"): 1e-4, ("float32", "adam"): 1e-3}
SMOKE_STEPS, SMOKE_BATCH, SMOKE = 20, 8, OptimizerConfig("adam", lr=0.02)
# 20 such steps on one fixed batch take tinycnn's loss from 2.36 to 0.085 (last/first 0.036, numpy, torch
# and flax, float32 and float64); an update that does nothing stays near 1, a wrong sign goes above it.
SMOKE_RATIO = 0.5


def batches(n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED + 2)
    spec = spec_of(CASE)
    return [(rng.standard_normal((size, *spec.input)), rng.integers(0, spec.classes, size)) for _ in range(n)]


def _train(make, dtype: str, config: OptimizerConfig, lrs: list[float | None]):
    """Parameters after one step per entry of lrs (a number: set_lr to it first), on seeded batches."""
    backend = make()
    backend.init_optimizer(config)
    for (x, y), lr in zip(batches(len(lrs), 8), lrs):
        if lr is not None:
            backend.set_lr(lr)
        backend.train_step(backend.prepare_batch(x.astype(dtype), y))
    return backend.get_params()


def updates(ctx: Context, where: str, config: OptimizerConfig, lrs: list[float | None]) -> Outcome:
    """Each parameter's update over the steps against the float64 reference's from the same start."""
    spec, start = spec_of(CASE), cast(params_of(CASE), ctx.dtype)
    got = _train(lambda: ctx.build(spec, start), ctx.dtype, config, lrs)
    ref_start = cast(start, "float64")
    want = _train(lambda: NumpyBackend(spec, ref_start, dtype="float64"), "float64", config, lrs)
    return compare_updates(ctx, where, config.name, got, want, ref_start)


def compare_updates(ctx: Context, where: str, rule: str, got, want, start, extra: list | None = None) -> Outcome:
    """Each parameter's update from start, got against want, within the optimizer's bound (plus extra tensors)."""
    bound = UPDATE_TOL[ctx.dtype, rule]
    missing = sorted(set(want) - set(got))
    if missing:
        return Outcome(float("inf"), bound, f"{where}: get_params() lacks {', '.join(missing)}")
    spec = spec_of(CASE)
    tensors = [(f"update of {layer_of(spec, k)}", minus(got[k], start[k]), want[k] - start[k]) for k in want]
    return outcome(where, (extra or []) + tensors, bound, ctx.dtype_note)


def minus(got, start: np.ndarray):
    """got - start in float64, or got unchanged when its shape is wrong (the comparison reports that)."""
    got = np.asarray(got, dtype=np.float64)
    return got - start if got.shape == start.shape else got


def optimizer(ctx: Context, label: str) -> Outcome:
    """STEPS steps of one configured optimizer."""
    return updates(ctx, f"{label}, {STEPS} steps", CONFIGS[label], [None] * STEPS)


def set_lr(ctx: Context) -> Outcome:
    """Adam, then set_lr before steps 2 and 3: a reset of the moments or step count shows in the update."""
    return updates(ctx, "adam with set_lr", CONFIGS["adam"], [None, 0.003, 0.02])


def sgd_set_lr(ctx: Context) -> Outcome:
    """SGD with momentum, the learning rate falling before steps 2 and 3 as under a cosine schedule."""
    # torch applies lr after the buffer (v = m * v + g; p -= lr * v); Keras puts it inside (v = m * v - lr * g;
    # p += v). The two agree while lr is constant, so only a changing lr tells them apart (here by up to 0.9).
    return updates(ctx, "sgd momentum 0.9 with set_lr", CONFIGS["sgd momentum 0.9"], [None, 0.02, 0.005])


EPOCH_IMAGES, EPOCH_BATCH, SEGMENTS = 27, 4, ((0, 2), (2, 5), (5, 7))  # 6 full batches and a short one


def epoch(ctx: Context) -> Outcome:
    """prepare_epoch and train_steps over uneven segments and a short last batch, against the reference's steps."""
    spec, start = spec_of(CASE), cast(params_of(CASE), ctx.dtype)
    rng = np.random.default_rng(SEED + 3)
    x, y = rng.standard_normal((EPOCH_IMAGES, *spec.input)), rng.integers(0, spec.classes, EPOCH_IMAGES)
    order = [np.arange(i, min(i + EPOCH_BATCH, EPOCH_IMAGES))[::-1] for i in range(0, EPOCH_IMAGES, EPOCH_BATCH)]
    lrs = [0.01 * (1 - k / 10) for k in range(len(order))]
    backend = ctx.build(spec, start)
    backend.init_optimizer(CONFIGS["adam"])
    prepared = backend.prepare_epoch(x.astype(ctx.dtype), y, order)
    losses = [float(v) for a, b in SEGMENTS for v in backend.train_steps(prepared, a, b, lrs[a:b])]
    ref = NumpyBackend(spec, cast(start, "float64"), dtype="float64")
    ref.init_optimizer(CONFIGS["adam"])
    want_losses = []
    for idx, lr in zip(order, lrs):
        ref.set_lr(lr)
        want_losses.append(float(ref.train_step(ref.prepare_batch(x[idx], y[idx]))))
    if len(losses) != len(order):
        return Outcome(float("inf"), None, f"train_steps returned {len(losses)} losses for {len(order)} steps")
    return compare_updates(ctx, f"adam, {len(order)} steps in {len(SEGMENTS)} calls", "adam", backend.get_params(),
                           ref.get_params(), cast(start, "float64"),
                           [("losses", np.array(losses), np.array(want_losses))])


def smoke(ctx: Context) -> Outcome:
    """SMOKE_STEPS Adam steps on one batch through prepare_batch/train_step must lower the loss."""
    backend = ctx.build(spec_of(CASE), params_of(CASE))
    backend.init_optimizer(SMOKE)
    x, y = batches(1, SMOKE_BATCH)[0]
    batch = backend.prepare_batch(x.astype(ctx.dtype), y)
    losses = [float(backend.train_step(batch)) for _ in range(SMOKE_STEPS)]
    backend.synchronize()
    peak = backend.peak_device_memory()
    if peak is not None and not (isinstance(peak, int) and peak >= 0):
        return Outcome(None, None, f"peak_device_memory() returned {peak!r}; expected None or a byte count", "fail")
    if not all(math.isfinite(v) for v in losses):
        return Outcome(float("inf"), SMOKE_RATIO, f"non-finite loss in {SMOKE_STEPS} Adam steps: {losses}")
    ratio = losses[-1] / losses[0]
    verdict = "fell" if ratio <= SMOKE_RATIO else f"did not fall below {SMOKE_RATIO:g}x"
    return Outcome(ratio, SMOKE_RATIO, f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {SMOKE_STEPS} Adam steps "
                                       f"(last/first; {verdict})")

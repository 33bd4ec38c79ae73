"""The kit's data-parallel section, for backends that declare data_parallel: the global batch's gradient on batches
the workers do not divide, and workers that stay identical."""
from __future__ import annotations

import numpy as np

from fwbench.backends.base import OptimizerConfig
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.agreement.agree import grad_tol
from fwbench.harness.conformance.cases import SEED, layer_of, params_of, spec_of
from fwbench.harness.conformance.context import Context, Outcome, cast
from fwbench.harness.conformance.measure import outcome
from fwbench.harness.conformance.training import CASE, compare_updates

SGD = OptimizerConfig("sgd", lr=0.05, momentum=0.9)


def _batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED + 5 + size)
    spec = spec_of(CASE)
    return rng.standard_normal((size, *spec.input)), rng.integers(0, spec.classes, size)


def _workers(ctx: Context) -> int:
    return int(ctx.once("workers", lambda: ctx.build(spec_of(CASE), params_of(CASE)).workers))


def gradient(ctx: Context, extra: int) -> Outcome:
    """loss_and_grads on a batch of workers * 2 + extra rows (extra = 1: uneven slices) against the reference."""
    workers = _workers(ctx)
    size = workers * 2 + extra if extra >= 0 else 1
    x, y = _batch(size)
    spec, start = spec_of(CASE), params_of(CASE)
    loss, grads = ctx.build(spec, start).loss_and_grads(x.astype(ctx.dtype), y)
    want_loss, want = NumpyBackend(spec, cast(start, "float64"), dtype="float64").loss_and_grads(x, y)
    tensors = [("loss", loss, want_loss)] + [(f"gradient of {layer_of(spec, k)}", grads.get(k), want[k]) for k in want]
    return outcome(f"a batch of {size} over {workers} workers", tensors, grad_tol(ctx.dtype, size), ctx.dtype_note)


def replicas(ctx: Context) -> Outcome:
    """Three SGD steps with momentum on uneven batches: every worker identical, and the updates the reference's."""
    workers = _workers(ctx)
    spec, start = spec_of(CASE), cast(params_of(CASE), ctx.dtype)
    backend, ref = ctx.build(spec, start), NumpyBackend(spec, cast(start, "float64"), dtype="float64")
    for b in (backend, ref):
        b.init_optimizer(SGD)
    for step in range(3):
        x, y = _batch(workers * 2 + 1 + step)
        backend.train_step(backend.prepare_batch(x.astype(ctx.dtype), y))
        ref.train_step(ref.prepare_batch(x, y))
    if not backend.replicas_identical():
        return Outcome(float("inf"), None, "after 3 steps the workers hold different parameters")
    return compare_updates(ctx, f"3 sgd steps over {workers} workers, every worker identical", "sgd",
                           backend.get_params(), ref.get_params(), cast(start, "float64"))


CHECKS = [("data-parallel/a batch the workers divide", lambda ctx: gradient(ctx, 0)),
          ("data-parallel/a batch they do not divide", lambda ctx: gradient(ctx, 1)),
          ("data-parallel/a batch of 1", lambda ctx: gradient(ctx, -1)),
          ("data-parallel/workers stay identical while training", replicas)]

"""Rows for the layers with state: batch norm's running statistics and dropout, in training and in evaluation."""
from __future__ import annotations

import numpy as np

from fwbench.harness.agreement.metrics import floors
from fwbench.harness.conformance.cases import (LAYER_CASES, SEED, layer_of, masks_of, params_of, reference_backend,
                                               reference_batch, rounded, spec_of, use_masks)
from fwbench.harness.conformance.context import Context, Outcome, cast
from fwbench.harness.conformance.layers import bound, inputs, instance
from fwbench.harness.conformance.measure import outcome, rel_error
from fwbench.harness.conformance.protocol import differences, exact, exchange
from fwbench.harness.conformance.training import CONFIGS, UPDATE_TOL, minus
from fwbench.models.params import Params, init_buffers

# Two steps: the second normalises with statistics of parameters the first updated, under other masks.
STEPS, OPTIMIZER = 2, "sgd momentum 0.9"


def running(case: str) -> Params:
    """Float64 buffers unlike the initial ones (mean 0, variance 1): an ignored set_buffers or a swap shows."""
    rng = np.random.default_rng(SEED + 4)
    return {k: v + rng.uniform(-0.5, 0.5, v.shape) for k, v in init_buffers(spec_of(case), "float64").items()}


def round_trip(ctx: Context, case: str) -> Outcome:
    """get_buffers() is init_buffers after construction, then exactly what set_buffers put in; as copies."""
    spec = spec_of(case)
    backend = ctx.build(spec, params_of(case))
    return exchange(spec, ctx.dtype, backend.get_buffers, backend.set_buffers, init_buffers(spec, ctx.dtype),
                    cast(running(case), ctx.dtype), "buffers")


def keeps_state(ctx: Context, case: str) -> Outcome:
    """loss_and_grads, a training pass, leaves the parameters and the running statistics exactly as they were."""
    spec, backend = spec_of(case), instance(ctx, case)
    use_masks(backend, case)
    params, buffers = backend.get_params(), backend.get_buffers()
    backend.loss_and_grads(*inputs(ctx, case))
    problems = (differences(spec, backend.get_params(), params, "after loss_and_grads")
                + differences(spec, backend.get_buffers(), buffers, "after loss_and_grads", "buffers"))
    return exact(problems, f"{len(params)} parameters and {len(buffers)} buffers unchanged")


def _train(backend, case: str, batch: tuple[np.ndarray, np.ndarray]) -> Params:
    """Parameters and buffers after STEPS train_steps on the batch, with the harness's masks for each step."""
    backend.init_optimizer(CONFIGS[OPTIMIZER])
    for step in range(STEPS):
        use_masks(backend, case, step)
        backend.train_step(backend.prepare_batch(*batch))
    return {**backend.get_params(), **backend.get_buffers()}


def training_steps(ctx: Context, case: str) -> Outcome:
    """The change train_steps make to every parameter and buffer against the float64 reference's."""
    spec = spec_of(case)
    got = _train(ctx.build(spec, params_of(case)), case, inputs(ctx, case))
    want = _train(reference_backend(case, ctx.dtype), case, reference_batch(case, ctx.dtype))
    where, tol = f"{case}, {STEPS} {OPTIMIZER} steps", UPDATE_TOL[ctx.dtype, "sgd"]
    missing = sorted(set(want) - set(got))
    if missing:
        return Outcome(float("inf"), tol, f"{where}: get_params() and get_buffers() lack {', '.join(missing)}")
    # Changes, not values (see training.UPDATE_TOL); the conv bias in front of a batch norm does not change in
    # exact arithmetic, so its change is rounding noise, measured against the floor.
    start = {**rounded(params_of(case), ctx.dtype), **init_buffers(spec, "float64")}
    changes = {k: want[k] - start[k] for k in want}
    tensors = [(f"change of {layer_of(spec, k)}", minus(got[k], start[k]), changes[k]) for k in want]
    floored = {f"change of {layer_of(spec, k)}": f for k, f in floors(changes, ctx.dtype).items()}
    return outcome(where, tensors, tol, ctx.dtype_note, floored)


def evaluation(ctx: Context, case: str) -> Outcome:
    """forward() after set_buffers normalises with those statistics, drops nothing though masks are set, repeats."""
    spec = spec_of(case)
    backend = ctx.build(spec, params_of(case))
    buffers = cast(running(case), ctx.dtype)
    if buffers:
        backend.set_buffers(buffers)
    use_masks(backend, case)  # for training passes: evaluation must ignore them
    x = inputs(ctx, case)[0]
    first, second = backend.forward(x), backend.forward(x)
    ref = reference_backend(case, ctx.dtype)
    ref.set_buffers(rounded(buffers, ctx.dtype))
    want = ref.forward(reference_batch(case, ctx.dtype)[0])
    out = outcome(case, [("logits", first, want)], bound(ctx, case), ctx.dtype_note)
    if not out.error <= out.bound:
        return out
    drift = rel_error(second, first)[0]
    if drift == 0.0:
        return out
    # Dropout left on in evaluation, or statistics updated by it, differ far beyond the bound.
    detail = f"{case}: a second forward() differs from the first by {drift:.1e} relative"
    return Outcome(drift, out.bound, detail, "note" if drift <= out.bound else None)


def state_checks() -> list[tuple[str, object]]:
    """(name, check) for the state rows of every layer case with buffers or dropout."""
    rows = []
    for case in LAYER_CASES:
        buffers, dropout = bool(spec_of(case).buffer_shapes()), masks_of(case) is not None
        if buffers:
            rows.append((f"state/{case}: buffers round trip", lambda ctx, case=case: round_trip(ctx, case)))
            rows.append((f"state/{case}: loss_and_grads keeps state", lambda ctx, case=case: keeps_state(ctx, case)))
        if buffers or dropout:
            rows.append((f"state/{case}: training steps", lambda ctx, case=case: training_steps(ctx, case)))
            rows.append((f"state/{case}: evaluation", lambda ctx, case=case: evaluation(ctx, case)))
    return rows

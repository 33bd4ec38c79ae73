"""A lowering row per layer type, forward and backward rows per layer case, loss and gradients on whole models."""
from __future__ import annotations

import numpy as np

from fwbench.harness.agreement.agree import grad_tol
from fwbench.harness.agreement.metrics import floors
from fwbench.harness.conformance.cases import (LAYER_CASES, batch_of, case_of_type, layer_of, params_of, reference,
                                               spec_of, use_masks)
from fwbench.harness.conformance.context import UNSUPPORTED, Context, Outcome
from fwbench.backends.messages import first_line
from fwbench.harness.conformance.measure import outcome
from fwbench.models.spec import LAYER_TYPES


def bound(ctx: Context, case: str) -> float:
    """The one-step bound of fwbench agree: 1e-10 in float64, the batch-scaled float32 bound otherwise."""
    return grad_tol(ctx.dtype, len(batch_of(case)[1]))


def instance(ctx: Context, case: str):
    """One instance per case, shared by its forward and backward rows."""
    return ctx.once(("instance", case), lambda: ctx.build(spec_of(case), params_of(case)))


def inputs(ctx: Context, case: str) -> tuple[np.ndarray, np.ndarray]:
    """The case's batch, its inputs in the dtype under test."""
    x, y = batch_of(case)
    return x.astype(ctx.dtype), y.copy()


def lowering(ctx: Context, kind: str) -> Outcome:
    """The backend builds the layer type's first case, or refuses it; if it declares UNSUPPORTED_LAYERS, as listed."""
    case = case_of_type(kind)
    if case is None:
        return Outcome(None, None, f"fwbench has no conformance case for layer type '{kind}'", "fail")
    # A backend that declares nothing (a plugin built some other way) may refuse any type: "not supported".
    declared = ctx.cls.UNSUPPORTED_LAYERS
    try:
        instance(ctx, case)
    except UNSUPPORTED as e:
        if declared is None or kind in declared:
            raise
        return Outcome(None, None, f"refused ({first_line(e)}), but UNSUPPORTED_LAYERS does not list '{kind}': "
                                   "lower it, or declare it", "fail")
    if declared is not None and kind in declared:
        return Outcome(None, None, f"built '{case}', though UNSUPPORTED_LAYERS lists '{kind}'", "note")
    return Outcome(None, None, f"built '{case}'")


def forward(ctx: Context, case: str) -> Outcome:
    """Logits of forward(x) against the reference's."""
    logits = instance(ctx, case).forward(inputs(ctx, case)[0])
    want, _, _ = reference(case, ctx.dtype)
    return outcome(case, [("logits", logits, want)], bound(ctx, case), ctx.dtype_note)


def backward(ctx: Context, case: str) -> Outcome:
    """Loss and every parameter's gradient from loss_and_grads, under the harness's masks, against the reference's."""
    backend = instance(ctx, case)
    use_masks(backend, case)
    loss, grads = backend.loss_and_grads(*inputs(ctx, case))
    _, want_loss, want = reference(case, ctx.dtype)
    spec = spec_of(case)
    tensors = [("loss", [loss], [want_loss])]
    missing = sorted(set(want) - set(grads))
    if missing:
        return Outcome(float("inf"), bound(ctx, case), f"{case}: no gradient for {', '.join(missing)}")
    tensors += [(f"gradient of {layer_of(spec, k)}", grads[k], want[k]) for k in want]
    floored = {f"gradient of {layer_of(spec, k)}": f for k, f in floors(want, ctx.dtype).items()}
    return outcome(case, tensors, bound(ctx, case), ctx.dtype_note, floored)


def model(ctx: Context, case: str) -> Outcome:
    """Logits, loss and gradients of a shipped model on one batch, in one row."""
    got = forward(ctx, case)
    grads = backward(ctx, case)
    worst = got if got.error > grads.error else grads
    off = [o for o in (got, grads) if not o.error <= o.bound]  # both, when both are off
    hint = next((o.hint for o in off if o.hint), "")
    return Outcome(worst.error, worst.bound, "; ".join(o.detail for o in off) or worst.detail, hint=hint)


def lowering_checks() -> list[tuple[str, object]]:
    """(name, check) for a lowering row per layer type of the spec."""
    return [(f"lowering/{kind}", lambda ctx, kind=kind: lowering(ctx, kind)) for kind in LAYER_TYPES]


def layer_checks() -> list[tuple[str, object]]:
    """(name, check) for a forward and a backward row per layer case."""
    rows = []
    for case in LAYER_CASES:
        rows.append((f"forward/{case}", lambda ctx, case=case: forward(ctx, case)))
        rows.append((f"backward/{case}", lambda ctx, case=case: backward(ctx, case)))
    return rows


def model_checks() -> list[tuple[str, object]]:
    """(name, check) for loss, logits and gradients on tinycnn and cnn."""
    return [(f"model/{name}", lambda ctx, name=name: model(ctx, name)) for name in ("tinycnn", "cnn")]

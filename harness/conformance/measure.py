"""Relative L2 errors of a backend's tensors against the reference, summed up as one row's outcome."""
from __future__ import annotations

import numpy as np

from fwbench.harness.conformance import hints
from fwbench.harness.conformance.context import Outcome
from fwbench.harness.agreement.metrics import compare


def rel_error(got, want, floor: float = 0.0) -> tuple[float, str]:
    """Relative L2 error of got against want (or floor, if larger), and "" or why it could not be measured."""
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return float("inf"), f"is not an array of numbers ({type(e).__name__}: {e})"
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf"), f"has shape {got.shape}, expected {want.shape}"
    error = compare(got, want, floor)["rel_l2"]
    return (error if np.isfinite(error) else float("inf")), ""


def outcome(where: str, tensors: list[tuple[str, object, object]], bound: float, note: str = "",
            floors: dict[str, float] | None = None) -> Outcome:
    """The worst tensor's error against the bound; a breach names the case and every tensor over it."""
    # floors, by label (metrics.floors): a gradient or update that is zero in exact arithmetic is rounding noise,
    # so it is measured against an absolute floor rather than against its own tiny norm.
    floors = floors or {}
    measured = [(label, *rel_error(got, want, floors.get(label, 0.0)), got, want) for label, got, want in tensors]
    measured.sort(key=lambda m: -m[1])
    worst_label, worst = measured[0][:2]
    over = [m for m in measured if not m[1] <= bound]
    if not over:
        return Outcome(worst, bound, _noted("exact" if worst == 0.0 else f"worst: {worst_label}", note))
    parts = [f"{label} {why}" if why else f"{label} off by {error:.1e} relative" for label, error, why, _, _ in over]
    detail = f"{where}: {parts[0]}" + (f"; also {', '.join(parts[1:])}" if parts[1:] else "")
    # Only tensors that could be measured tell a pattern; a wrong shape or a non-number is its own message.
    hint = hints.tensors([(label, got, want) for label, _, why, got, want in over if not why], worst, bound)
    return Outcome(worst, bound, _noted(detail, note), hint=hint)


def _noted(detail: str, note: str) -> str:
    return f"{detail}; {note}" if note else detail

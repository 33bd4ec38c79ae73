"""Hints on failing rows: the kind of mistake an error's pattern points to, only where the pattern is clear."""
from __future__ import annotations

import dataclasses

import numpy as np

from fwbench.harness.conformance.cases import LAYER_CASES, layer_type

# float32 rounds to ~6e-8; its errors after a few operations land here. A bound under the range is one that only
# float64 arithmetic meets, so an error inside it, far over the bound yet far under a real mistake's, is float32's.
FLOAT32_ERRORS = (1e-9, 1e-5)
FLOAT32 = ("float32-sized error in a float64 run: some value is float32 "
           "(a scalar such as the learning rate, or an array cast to float32?)")
# A multiple is "clean" when the leftover after scaling is this small; float32 rounding stays under 1e-5.
SCALE_RESIDUAL, LARGEST_FACTOR = 1e-4, 1024
FLATTEN = "flatten fails where dense passes: flatten in C, H, W order (channels last: permute the dense rows after it)"
FLATTEN_FIRST = "fix flatten first (C, H, W order): its rows fail where dense's pass, and this row's spec flattens too"
# Rows that run a spec through the backend against the reference (every case and model flattens), less the exact
# exchanges of state, which compute nothing.
THROUGH_SPEC = ("forward/", "backward/", "model/", "state/", "optimizer/", "training/")
EXCHANGES = (": buffers round trip", ": loss_and_grads keeps state")


def factor(got, want) -> float | None:
    """c > 0 when got is c * want up to rounding, else None."""
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    norm = float(want @ want)
    if got.shape != want.shape or not norm > 0 or not np.all(np.isfinite(got)):
        return None
    c = float(got @ want) / norm
    if not c > 0 or np.linalg.norm(got - c * want) > SCALE_RESIDUAL * c * np.sqrt(norm):
        return None
    return c


def scale(label: str, got, want) -> str:
    """A hint for a gradient that is n or 1/n times the reference's (n = 2, 3, ...), else ""."""
    c = factor(got, want) if label.startswith("gradient") else None
    if c is None:
        return ""
    n = round(max(c, 1 / c))  # 2.0 and 0.5 both give 2
    if not 2 <= n <= LARGEST_FACTOR or abs(max(c, 1 / c) - n) > SCALE_RESIDUAL * n:
        return ""  # 1.1x is a wrong value, not a factor anyone wrote by mistake
    return f"{label} is {n}x the reference's: looks like a scale factor (a mean vs a sum?)" if c > 1 else (
        f"{label} is 1/{n} of the reference's: looks like a scale factor (a mean vs a sum?)")


def precision(error: float, bound: float) -> str:
    """A hint for an error of float32's size where the bound asks for float64's, else ""."""
    low, high = FLOAT32_ERRORS
    return FLOAT32 if bound < low and low <= error <= high else ""


def tensors(over: list[tuple[str, object, object]], worst: float, bound: float) -> str:
    """The hint for a row from its tensors over the bound, (label, got, want), and its worst error; or ""."""
    return next(filter(None, (scale(label, got, want) for label, got, want in over)), "") or precision(worst, bound)


def _layer_case(name: str) -> str | None:
    """The layer case of a forward or backward row, else None."""
    group, _, case = name.partition("/")
    return case if group in ("forward", "backward") and case in LAYER_CASES else None


def flatten_rows(results: list) -> dict[str, str]:
    """Hints by row name when a flatten row fails and every dense row passes (so the flatten, not dense, is off)."""
    kinds = {r.name: layer_type(case) for r in results if (case := _layer_case(r.name))}
    dense = [r for r in results if kinds.get(r.name) == "dense"]
    flat_failed = any(kinds.get(r.name) == "flatten" and r.status == "fail" for r in results)
    if not (dense and flat_failed and all(r.status == "pass" for r in dense)):
        return {}
    return {r.name: FLATTEN if kinds.get(r.name) == "flatten" else FLATTEN_FIRST for r in results
            if r.status == "fail" and r.name.startswith(THROUGH_SPEC) and not r.name.endswith(EXCHANGES)}


def annotate(results: list) -> list:
    """results with the flatten hints added to failing rows that have no hint of their own yet."""
    # A row's own hint (from its tensors) is kept: it says more about that row than the pattern across rows.
    found = flatten_rows(results)
    return [dataclasses.replace(r, hint=found[r.name]) if r.name in found and not r.hint else r for r in results]

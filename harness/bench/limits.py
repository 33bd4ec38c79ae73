"""Each cell's distance from the machine's limit: its achieved GFLOP/s, MFU and FLOP-limited step time."""
from __future__ import annotations

import math

# The calibration times NumPy's float32 matmul on the CPU: a peak only for float32 cells on the CPU.
PEAK_DEVICE, PEAK_DTYPES = "cpu", (None, "float32")


def gflops(step_gflop: float, step_ms: float) -> float:
    """The achieved model FLOP rate of a step of step_gflop that took step_ms."""
    return step_gflop / step_ms * 1e3


def flop_figures(spec, batch_size: int, step_ms: float) -> dict:
    """step_gflop (the spec's FLOPs per training step, models/flops.py) and the rate reached at step_ms."""
    from fwbench.models.flops import step_flops
    step_gflop = step_flops(spec, batch_size) / 1e9
    return {"step_gflop": step_gflop, "gflops": gflops(step_gflop, step_ms)}


def peak_gflops(doc: dict) -> float | None:
    """The machine's matmul peak: the larger of the run's calibrations, or None when it has none."""
    # The larger, not the median: each calibration is already the fastest of its timings (what the machine can
    # do), and a slow one says the machine was busy then, not that it is slower. A higher peak also never
    # flatters a cell: its fraction can only shrink.
    found = [c.get("matmul_gflops") for c in (doc.get("calibration") or {}).values() if isinstance(c, dict)]
    found = [v for v in found if _number(v) and v > 0]
    return max(found) if found else None


def fill(doc: dict) -> None:
    """Add mfu and flop_limited_ms to every successful cell with a FLOP rate that lacks them; null where no peak."""
    peak = peak_gflops(doc)
    if peak is None:
        return  # no calibration (an old file): the reports show a dash
    for cell in doc.get("cells", []):
        m = cell.get("metrics") or {}
        if cell.get("status") != "ok" or not (_number(m.get("gflops")) and _number(m.get("step_gflop"))):
            continue
        applies = cell.get("device") == PEAK_DEVICE and cell.get("dtype") in PEAK_DTYPES
        m.setdefault("mfu", m["gflops"] / peak if applies else None)
        m.setdefault("flop_limited_ms", m["step_gflop"] / peak * 1e3 if applies else None)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

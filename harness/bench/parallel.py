"""A data-parallel cell's own figures: its workers, the slowest worker's step, throughput per worker, memory."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine import parallel
from fwbench.harness.probes.memory import peak_rss_mb


def reset(backend) -> None:
    """Start a data-parallel backend's worker step clocks afresh; nothing for any other backend."""
    if getattr(backend, "data_parallel", False) and hasattr(backend, "worker_step_s"):
        backend.worker_step_s()


def figures(backend, batch_size: int, step_ms: float) -> dict:
    """What only a data-parallel run has, read off its workers after step timing; {} for any other backend."""
    if not getattr(backend, "data_parallel", False):
        return {}
    workers, threads, cores = backend.workers, backend.threads_per_worker, parallel.cores()
    slowest, memory, driver = step_ms, [peak_rss_mb()], None  # devices of this process: one clock, one image
    if hasattr(backend, "worker_step_s"):  # workers with clocks of their own (torch@ddp's ranks)
        per_rank = backend.worker_step_s()
        steps = min(len(s) for s in per_rank)
        # Every step waits for its slowest worker at the all-reduce: the step's time is the largest of the ranks'.
        slowest = float(np.median([max(s[i] for s in per_rank) for i in range(steps)])) * 1e3 if steps else None
    if hasattr(backend, "worker_peak_rss_mb"):
        memory = backend.worker_peak_rss_mb()
        # flax@dp on a CPU: this process only drives workers of their own, and its image is the cell's too.
        driver = peak_rss_mb() if getattr(backend, "driver_apart", False) else None
    note = getattr(backend, "scaling_note", None)
    if note is None and workers * threads > cores:
        note = f"not a scaling measurement: {workers} workers x {threads} thread{'s' * (threads != 1)} on {cores} cores"
    return {"workers": workers, "threads_per_worker": threads, "slowest_worker_step_ms": slowest,
            "images_per_s_per_worker": batch_size / step_ms * 1e3 / workers,
            "workers_peak_rss_mb": memory, "driver_peak_rss_mb": driver, "peak_rss_mb": sum(memory) + (driver or 0),
            "scaling_note": note}


def link(cells: list[dict]) -> None:
    """Weak-scaling efficiency of each data-parallel cell against its 1-worker baseline, where the run has it."""
    for cell in cells:
        n, metrics = cell.get("workers") or 1, cell.get("metrics") or {}
        if n < 2 or not metrics.get("images_per_s"):
            continue
        base = next((c for c in cells if c.get("workers") == 1 and c.get("status") == "ok"
                     and (c["backend"], c["model"], c["device"], c.get("dtype")) ==
                     (cell["backend"], cell["model"], cell["device"], cell.get("dtype"))
                     and c["batch_size"] == cell["batch_size"] // n), None)
        one = (base or {}).get("metrics", {}).get("images_per_s")
        metrics["weak_scaling_efficiency"] = metrics["images_per_s"] / (n * one) if one else None

"""The device questions every backend on JAX answers alike: which devices there are, and the GPU's peak memory."""
from __future__ import annotations

import jax


def devices() -> list[str]:
    """CPU, plus CUDA when jax sees a GPU."""
    try:
        gpu = any(d.platform in ("gpu", "cuda") for d in jax.devices("gpu"))
    except RuntimeError:  # jaxlib without a GPU backend
        gpu = False
    return ["cpu", "cuda"] if gpu else ["cpu"]


def peak_memory(device: str, dev) -> int | None:
    """XLA's peak_bytes_in_use on a GPU; None on the CPU."""
    if device != "cuda":
        return None
    return (dev.memory_stats() or {}).get("peak_bytes_in_use")

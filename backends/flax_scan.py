"""Flax's `scan` mode: an epoch's data resident on the device, its steps fused into one lax.scan per call."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import jax
import numpy as np


@dataclass(frozen=True)
class ResidentEpoch:
    """One epoch on the device: all its images once, and the batches as rows of indices, never as copies."""
    x: jax.Array            # (N, H, W, C) the epoch's images
    y: jax.Array            # (N,) int32 labels
    full: jax.Array         # (steps with a full batch, batch size) int32 indices into x
    ragged: jax.Array | None  # indices of a smaller last batch, or None

    @property
    def steps(self) -> int:
        return len(self.full) + (self.ragged is not None)


def resident(x: np.ndarray, y: np.ndarray, order: Sequence[np.ndarray], dtype, device: jax.Device) -> ResidentEpoch:
    """Put the epoch's NHWC images, labels and batch indices on the device in one go."""
    size = len(order[0])
    full = [idx for idx in order if len(idx) == size]
    # batch_order puts the only short batch last; a short one elsewhere would break the fused rows.
    assert all(len(idx) == size for idx in order[:-1]), "a short batch that is not the last"
    ragged = order[-1] if len(full) < len(order) else None
    put = partial(jax.device_put, device=device)
    return ResidentEpoch(put(np.asarray(x, dtype)), put(np.asarray(y, np.int32)),
                         put(np.asarray(full, np.int32).reshape(len(full), size)),
                         None if ragged is None else put(np.asarray(ragged, np.int32)))


def fuse(step: Callable) -> Callable:
    """A jitted scan of `step(params, opt_state, x, y, lr)` over `length` rows of indices from `start`."""
    def run(params, opt_state, x, y, rows, lrs, start, length):
        def body(carry, inputs):
            idx, lr = inputs
            params, opt_state, loss = step(*carry, x[idx], y[idx], lr)
            return (params, opt_state), loss
        chunk = jax.lax.dynamic_slice_in_dim(rows, start, length)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (chunk, lrs))
        return params, opt_state, losses

    # Donated parameters and moments are updated in place; the resident data is read, never copied.
    # A start that is traced keeps one compilation per segment length, whatever the offset.
    return jax.jit(run, donate_argnums=(0, 1), static_argnums=(7,))


def ragged_step(step: Callable) -> Callable:
    """The jitted step on the short last batch, gathered on the device."""
    def run(params, opt_state, x, y, idx, lr):
        return step(params, opt_state, x[idx], y[idx], lr)
    return jax.jit(run, donate_argnums=(0, 1))


def to_host(losses: list[jax.Array]) -> np.ndarray:
    """The segment's losses as one host array: the only read-back of a fused call."""
    return np.concatenate([np.atleast_1d(np.asarray(l)) for l in losses]) if losses else np.zeros(0, np.float32)


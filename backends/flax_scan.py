"""Flax's fused modes (scan, scan-tuned): an epoch's data resident on the device, its steps one compiled loop."""
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
    """A jitted loop of `step(params, opt_state, stats, x, y, lr, noise)` over rows[start:stop].

    lrs and losses span all rows; stats are the batch_stats ({} without batch norm); the step at row i gets
    noise.later(i - start), the dropout noise that many training passes on."""
    def run(params, opt_state, stats, x, y, rows, lrs, start, stop, noise):
        def body(i, carry):
            params, opt_state, stats, losses = carry
            params, opt_state, stats, loss = step(params, opt_state, stats, x[rows[i]], y[rows[i]], lrs[i],
                                                  noise.later(i - start))
            return params, opt_state, stats, losses.at[i].set(loss)
        losses = jax.numpy.zeros(len(rows), lrs.dtype)
        return jax.lax.fori_loop(start, stop, body, (params, opt_state, stats, losses))

    # Donated parameters, moments and statistics are updated in place; the resident data is read, never copied.
    # Traced bounds and epoch-long lrs and losses: one compilation serves every stretch of the epoch.
    return jax.jit(run, donate_argnums=(0, 1, 2))


def ragged_step(step: Callable) -> Callable:
    """The jitted step on the short last batch, gathered on the device."""
    def run(params, opt_state, stats, x, y, idx, lr, noise):
        return step(params, opt_state, stats, x[idx], y[idx], lr, noise)
    return jax.jit(run, donate_argnums=(0, 1, 2))


def to_host(losses: list[jax.Array]) -> np.ndarray:
    """The segment's losses as one host array: the only read-back of a fused call."""
    return np.concatenate([np.atleast_1d(np.asarray(l)) for l in losses]) if losses else np.zeros(0, np.float32)


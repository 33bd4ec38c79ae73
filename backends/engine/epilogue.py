"""What follows a conv's GEMM (activation, pool, activation), run over runs of consecutive slices of images."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine import parallel

# The pool and what follows it run over runs of consecutive slices, up to this many bytes of the conv's output each
# (and at least one run a worker): on a slice of a few images each of a pool's 13 to 37 passes takes a few
# microseconds, and two workers making such calls wait on each other for the GIL (np.take and np.bincount, in an
# overlapping max pool's backward pass, hold it throughout). Measured here against a run per slice, steps in
# alternating rounds: wide7 0.84x the time, overlap 0.87x, vgg 0.91x, lenet5 0.89-0.95x, pyex 0.9x, cnn and
# tgmnist within noise; and one run a worker (batch 64) took 0.95-0.97x the time of 2 MiB runs on wide7 and vgg.
RUN_BYTES = 1 << 23


def runs_of(slices: list[slice], bytes_per_image: int) -> list[list[slice]]:
    """The slices in runs of consecutive ones, about RUN_BYTES of output each, and as many runs as workers at least."""
    whole = (slices[-1].stop - slices[0].start) * bytes_per_image
    count = min(len(slices), max(-(-whole // RUN_BYTES), parallel.threads()))
    bounds = [len(slices) * i // count for i in range(count + 1)]
    return [slices[lo:hi] for lo, hi in zip(bounds, bounds[1:])]


def images(run: list[slice]) -> slice:
    """The images of a run of consecutive slices."""
    return slice(run[0].start, run[-1].stop)


def longest(runs: list[list[slice]]) -> int:
    """The images of the longest of these runs."""
    return max(run[-1].stop - run[0].start for run in runs)


class Epilogue:
    """What came after the conv's GEMM, undone run by run in the backward pass: after, the pool, the activation."""

    def __init__(self, post_grad, out, windows, arg, act_grad, act_out, runs: list[list[slice]]):
        self.post_grad, self.out, self.windows, self.arg = post_grad, out, windows, arg
        self.act_grad, self.act_out, self.runs = act_grad, act_out, runs

    def grad(self, g: np.ndarray, s: slice, unpooled: np.ndarray | None) -> np.ndarray:
        """The gradient at the GEMM's output for images s (a run), from g, their gradient at the conv2d's output."""
        owned = False  # g may be an array other tensors hold, until a step here makes a new one
        if self.post_grad is not None:
            g, owned = self.post_grad(g, self.out[s]), True
        if self.windows is not None:
            self.windows.backward(g, None if self.arg is None else self.arg[s], unpooled)
            g, owned = unpooled, True
        if self.act_grad is not None:
            g = self.act_grad(g, self.act_out[s], g if owned else None)
        return g

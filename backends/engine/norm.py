"""Batch normalisation and dropout: the two layers that behave differently in training and in evaluation."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine import parallel
from fwbench.backends.engine.activations import ACTIVATIONS
from fwbench.backends.engine.tensor import Tensor
from fwbench.backends.engine.xp import module_of

# Batch norm runs its passes a chunk of images at a time, about this size, so that each pass finds the chunk that the
# one before it wrote still in cache: the whole batch's values (1.6 MB for 64 x 14 x 14 x 32) overflow a core's L2.
# Measured on a 2-core Intel Xeon (2 MiB L2 a core), that batch's forward and backward: whole 646 + 696 us, chunks
# of 32 KiB 1069 + 939 (NumPy's calls add up), 128 KiB 640 + 577, 256 KiB 555 + 512, 512 KiB 536 + 559.
CHUNK_BYTES = 256 << 10


def batchnorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, running: tuple[np.ndarray, np.ndarray],
              training: bool, momentum: float | None = None, act: str | None = None, across=None) -> Tensor:
    """Per channel of NHWC x (per feature of (N, F) x); batch statistics in training, else the running ones.

    running is (mean, var). With a momentum, training also updates them in place, as PyTorch does:
    running = (1 - momentum) running + momentum batch, the variance unbiased there though biased in the output.
    act (relu, tanh, sigmoid) is applied to the output chunk by chunk, its gradient read from its own output.
    across: x is one replica's share of the batch (replica.Link); the statistics are the whole batch's."""
    xp = module_of(x.data)
    n, reps = x.shape[0], x.data.size // x.shape[-1] // max(x.shape[0], 1)
    count = reps * (across.images if across else n)  # values per channel, in the whole batch
    # Each image is one row, and a per-channel vector is tiled along it: broadcast along the channel axis alone,
    # NumPy loops over runs of C values, 2.5x slower (tgmnist's first batch norm: 0.39 against 0.16 ms a pass).
    # Every pass runs in this thread: on the workers, half the images each, forward and backward of a 64 x 14 x 14 x
    # 32 batch took 1.7-2.3 and 1.4-2.1 ms against 0.6-0.9 and 1.0-1.6 here, and a step of tgmnist 1.05x, of a
    # strided-conv spec with batch norm 1.13x as long (8 alternating rounds).
    rows = x.data.reshape(n, -1)
    parts = chunks(rows)
    centred = xp.empty_like(rows)
    scratch = xp.empty_like(rows[parts[0]])

    def tile(v):
        return xp.tile(v, reps)
    if training and count < 2:
        raise ValueError(f"batchnorm in training needs more than one value per channel, got {count}; "
                         "use a batch of 2 or more")
    per = x.dtype.type(1 / count)
    mu, var = (channel_sum(x.data, across) * per, None) if training else running
    minus, sums = tile(mu), xp.empty((n, x.shape[-1]), dtype=x.dtype)
    squared = xp.empty_like(sums)
    for s in parts:
        xp.subtract(rows[s], minus, out=centred[s])
        if training:
            squares = scratch[:s.stop - s.start]
            xp.multiply(centred[s], centred[s], out=squares)
            image_sums(centred[s], sums[s])
            image_sums(squares, squared[s])
    # The mean once more, of what is left: float32's rounding of the first one (~1e-6 relative) moved every gradient
    # of tgmnist by 1e-5 (float64 sums throughout: 1e-6, at ten times the time). That small shift is not taken from
    # every value but folded into per-channel constants: var = mean(c^2) - shift^2, xhat = c inv_std - drift, with
    # drift = shift inv_std (the same algebra, one pass fewer).
    if training:
        shift, square = totals((sums, squared), across)
        shift *= per
        mu += shift
        var = xp.maximum(square * per - shift * shift, 0)
        if momentum is not None:
            running[0][...] = (1 - momentum) * running[0] + momentum * mu
            running[1][...] = (1 - momentum) * running[1] + momentum * var * (count / (count - 1))
    else:
        shift = xp.zeros_like(mu)
    inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    drift = shift * inv_std
    # scaled is c inv_std (xhat + drift), in place: centred is not needed again.
    scaled, y = centred, parallel.output(centred.shape, centred.dtype, xp)
    times, gain, bias = tile(inv_std), tile(gamma.data), tile(beta.data - gamma.data * drift)
    activate, act_grad = ACTIVATIONS[act] if act else (None, None)
    for s in parts:
        scaled[s] *= times
        xp.multiply(scaled[s], gain, out=y[s])
        y[s] += bias
        if activate:  # while the chunk is in cache: no pass over the whole batch, no array of its own
            activate(y[s], y[s])
    out = Tensor(y.reshape(x.shape), _prev=(x, gamma, beta), _op=f"batchnorm_{act}" if act else "batchnorm")

    def _backward(g):
        upstream = xp.ascontiguousarray(g).reshape(n, -1)
        dbeta, dgamma = xp.empty_like(sums), xp.empty_like(sums)
        dx = parallel.output(upstream.shape, upstream.dtype, xp)
        g = dx if act_grad else upstream  # the gradient at batch norm's own output: kept in dx for the second pass
        for s in parts:
            if act_grad:
                act_grad(upstream[s], y[s], dx[s])
            g_scaled = scratch[:s.stop - s.start]
            xp.multiply(g[s], scaled[s], out=g_scaled)
            image_sums(g[s], dbeta[s])
            image_sums(g_scaled, dgamma[s])
        # A replica's parameter gradients are its own images' (the replicas' are added after the step); its input
        # gradient needs the whole batch's: the same sums where there are no replicas.
        own = float64_sums((dbeta, dgamma))
        dbeta, dgamma = (own if across is None else across.sum(own)).astype(x.dtype)
        dgamma -= drift * dbeta  # sum(g xhat) = sum(g (scaled - drift))
        own_dbeta, own_dgamma = own.astype(x.dtype)
        if beta.requires_grad:
            beta.accumulate(own_dbeta)
        if gamma.requires_grad:
            gamma.accumulate(own_dgamma - drift * own_dbeta)
        if x.requires_grad:
            scale = gamma.data * inv_std
            # The statistics depend on x too: dx = scale (g - mean(g) - xhat mean(g xhat)), as torch writes it,
            # with the channel means taken from the sums above, and xhat = scaled - drift.
            k = scale * dgamma * per
            times, slope, offset = tile(scale), tile(k), tile(scale * dbeta * per - drift * k)
            for s in parts:
                xp.multiply(g[s], times, out=dx[s])  # in place where g is dx
                if training:
                    part = scratch[:s.stop - s.start]
                    xp.multiply(scaled[s], slope, out=part)
                    dx[s] -= part
                    dx[s] -= offset
            x.accumulate(dx.reshape(x.shape))
    out._backward = _backward
    return out


def chunks(rows: np.ndarray) -> list[slice]:
    """Slices of rows (images) of about CHUNK_BYTES: each pass over one stays in the core's cache for the next."""
    if module_of(rows) is not np:
        return [slice(0, len(rows))]
    step = max(1, CHUNK_BYTES // max(1, rows[0].nbytes))
    return [slice(i, min(i + step, len(rows))) for i in range(0, len(rows), step)]


def image_sums(rows: np.ndarray, out: np.ndarray) -> None:
    """Each row's (image's) sum per channel into out (rows, C), by one batched GEMM (BLAS sums in blocks)."""
    xp, m, c = module_of(rows), rows.shape[0], out.shape[-1]
    per_image = rows.reshape(m, -1, c)
    xp.matmul(xp.ones((1, per_image.shape[1]), dtype=rows.dtype), per_image, out=out.reshape(m, 1, c))


def totals(parts: tuple[np.ndarray, ...], across=None) -> list[np.ndarray]:
    """Each (images, C) array's per-channel sum over its images, added in float64, back in their dtype; over every
    replica's images with across (replica.Link), in one exchange."""
    sums = float64_sums(parts)
    if across is not None:
        sums = across.sum(sums)
    return list(sums.astype(parts[0].dtype))


def float64_sums(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """(len(parts), C): each (images, C) array's per-channel sum over its images, in float64."""
    return module_of(parts[0]).stack([p.sum(axis=0, dtype=np.float64) for p in parts])


def channel_sum(a: np.ndarray, across=None) -> np.ndarray:
    """The sum over every axis but the last (channels last): each image's in its dtype, then theirs in float64."""
    # Each image's sums by one batched GEMM (BLAS sums in blocks), then the images' sums in float64. NumPy's own
    # float32 sum over the outer axes runs one value after another and lost 1e-3 relative on tgmnist; a float64
    # sum throughout is 10x slower (0.8 ms against 0.08 for tgmnist's first batch norm).
    sums = module_of(a).empty((a.shape[0], a.shape[-1]), dtype=a.dtype)
    image_sums(a.reshape(a.shape[0], -1), sums)
    return totals((sums,), across)[0]


def dropout(x: Tensor, keep: np.ndarray, rate: float) -> Tensor:
    """x times keep / (1 - rate): the dropped units zero, the kept ones scaled up (inverted dropout)."""
    # The scaled mask first and one product after, as PyTorch computes it (noise.div_(1 - p); input * noise).
    scale = keep.astype(x.dtype) / x.dtype.type(1 - rate)
    out = Tensor(x.data * scale, _prev=(x,), _op="dropout")

    def _backward(g):
        if x.requires_grad:
            x.accumulate(g * scale)
    out._backward = _backward
    return out

"""The spec's layers and the loss on nested lists of Values: most one sample at a time, batch norm over the batch."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from fwbench.backends.micrograd.engine import Value
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                                 Tanh)

# One sample's activations are a (C, H, W) grid as lists x[c][h][w], or a flat list after flatten.
# Conv weights are w[out][in][kh][kw] and dense weights w[in][out], as in the canonical layout.


def conv2d(x: list, w: list, b: list, stride: int, pads: tuple[int, int, int, int]) -> list:
    """Cross-correlation of x with each filter, plus its bias; the zero pads (top, bottom, left, right) are implicit."""
    k = len(w[0][0])
    top, bottom, left, right = pads
    oh = (len(x[0]) + top + bottom - k) // stride + 1
    ow = (len(x[0][0]) + left + right - k) // stride + 1
    return [[[sum((w[o][c][i][j] * v for c, i, j, v in _patch(x, r * stride - top, s * stride - left, k)), b[o])
              for s in range(ow)] for r in range(oh)] for o in range(len(w))]


def _patch(x: list, top: int, left: int, k: int):
    """(c, i, j, x[c][top+i][left+j]) over the k x k window at (top, left), every channel."""
    h, w = len(x[0]), len(x[0][0])
    for c, plane in enumerate(x):
        for i in range(k):
            for j in range(k):
                # Cells in the padding are zeros, so their terms add nothing: skip them.
                if 0 <= top + i < h and 0 <= left + j < w:
                    yield c, i, j, plane[top + i][left + j]


def relu(x: list) -> list:
    """max(v, 0) for every Value of a grid or a flat list."""
    return [relu(e) if isinstance(e, list) else e.relu() for e in x]


def each(x: list, op: str) -> list:
    """Value.op() for every Value of a grid or a flat list (tanh, sigmoid)."""
    return [each(e, op) if isinstance(e, list) else getattr(e, op)() for e in x]


def maxpool2d(x: list, size: int, stride: int) -> list:
    """Max over each VALID size x size window, windows `stride` apart (they may overlap)."""
    oh, ow = (len(x[0]) - size) // stride + 1, (len(x[0][0]) - size) // stride + 1
    return [[[_first_max([plane[r * stride + i][s * stride + j] for i in range(size) for j in range(size)])
              for s in range(ow)] for r in range(oh)] for plane in x]


def _first_max(window: list[Value]) -> Value:
    """The window's largest Value itself: it alone receives the gradient, so no new node is needed."""
    best = window[0]
    for v in window[1:]:
        if v.data > best.data:  # strictly greater: on a tie the first in row-major order wins, as in torch
            best = v
    return best


def avgpool2d(x: list, size: int, stride: int) -> list:
    """Mean over each VALID size x size window, windows `stride` apart: the window's sum divided by its size."""
    oh, ow = (len(x[0]) - size) // stride + 1, (len(x[0][0]) - size) // stride + 1
    # Summed in row-major order and then scaled, as the NumPy engine computes it.
    return [[[sum(plane[r * stride + i][s * stride + j] for i in range(size) for j in range(size)) / (size * size)
              for s in range(ow)] for r in range(oh)] for plane in x]


def flatten(x: list) -> list:
    """A (C, H, W) grid as one list in C, H, W order."""
    return [v for plane in x for row in plane for v in row]


def dense(x: list, w: list, b: list) -> list:
    """x @ w + b, with w laid out (in, out)."""
    return [sum((x[i] * w[i][o] for i in range(len(x))), b[o]) for o in range(len(b))]


def batchnorm(xs: list, gamma: list, beta: list, eps: float,
              running: tuple[Any, Any] | None = None) -> tuple[list, list[tuple[float, float, int]]]:
    """(x - mean) / sqrt(var + eps) * gamma + beta per channel of a batch of (C, H, W) grids or (F,) lists.

    running None (training): the batch's mean and biased variance, Values the gradient flows through, also returned
    per channel as (mean, var, count) floats; else running = (means, variances), taken as constants (evaluation)."""
    stats, outs = [], []
    for c in range(len(xs[0])):
        values = [v for x in xs for v in _leaves(x[c])]
        if running is None and len(values) < 2:
            raise ValueError(f"batchnorm in training needs more than one value per channel, got {len(values)}; "
                             "use a batch of 2 or more")
        mean = sum(values) / len(values) if running is None else float(running[0][c])
        neg = -mean  # one node, shared by every centred value
        centred = [v + neg for v in values]
        var = sum(d * d for d in centred) / len(values) if running is None else float(running[1][c])
        scale = (var + eps) ** -0.5
        outs.append(iter([d * scale * gamma[c] + beta[c] for d in centred]))
        if running is None:
            stats.append((mean.data, var.data, len(values)))
    # Each channel's outputs were made in the order _leaves reads them (sample by sample, row-major): put them back.
    return [[_map(x[c], lambda v, c=c: next(outs[c])) for c in range(len(x))] for x in xs], stats


def dropout(x: list, keep: list, rate: float) -> list:
    """x times keep / (1 - rate) for a grid or a flat list and its nested keep-mask (inverted dropout)."""
    # The scale first, then one product: the NumPy engine's (and PyTorch's) rounding.
    if isinstance(x, list):
        return [dropout(e, k, rate) for e, k in zip(x, keep, strict=True)]
    return x * (float(keep) / (1 - rate))


def _map(e, op: Callable) -> Any:
    """op on every Value of a nested list (or on one Value), keeping the nesting."""
    return [_map(v, op) for v in e] if isinstance(e, list) else op(e)


def _leaves(e) -> list:
    """Every Value of a nested list (or the one Value), in row-major order."""
    return [v for sub in e for v in _leaves(sub)] if isinstance(e, list) else [e]


@dataclass
class Run:
    """How one pass over a batch runs: training or evaluation, and where batch norm's and dropout's state comes from."""
    training: bool
    buffers: dict[str, Any]            # "{i}.running_mean" / "{i}.running_var" -> float64 array, updated in place
    update: bool = False               # training: update the running statistics (a train step, not loss_and_grads)
    masks: dict[str, Any] | None = None  # "{i}.mask" -> the harness's (N, ...) keep-mask; None: drawn from rng
    rng: random.Random | None = None   # the backend's own generator for dropout

    def keep(self, i: int, n: int, x: list, rate: float) -> list:
        """Layer i's keep-mask for sample n, nested as x."""
        if self.masks is not None:
            return self.masks[f"{i}.mask"][n].tolist()
        return _map(x, lambda v: self.rng.random() >= rate)


def _batchnorm(xs: list, i: int, layer: BatchNorm, w: list, b: list, run: Run) -> list:
    mean, var = run.buffers[f"{i}.running_mean"], run.buffers[f"{i}.running_var"]
    out, stats = batchnorm(xs, w, b, layer.eps, None if run.training else (mean, var))
    if run.update:
        m = layer.momentum
        for c, (batch_mean, batch_var, count) in enumerate(stats):
            # PyTorch's rule: the running variance takes the unbiased batch variance, the output the biased one.
            mean[c] = (1 - m) * mean[c] + m * batch_mean
            var[c] = (1 - m) * var[c] + m * batch_var * (count / (count - 1))
    return out


def _dropout(xs: list, i: int, layer: Dropout, w: None, b: None, run: Run) -> list:
    if not (run.training and layer.rate):
        return xs
    return [dropout(x, run.keep(i, n, x, layer.rate), layer.rate) for n, x in enumerate(xs)]


def each_sample(op: Callable) -> Callable:
    """A one-sample op(x, layer, w, b) as a batch op(xs, i, layer, w, b, run)."""
    return lambda xs, i, layer, w, b, run: [op(x, layer, w, b) for x in xs]


# Layer type -> op(xs, i, layer, w, b, run) on a batch (a list of samples): layer i, its parameters as nested
# Values (None without), the Run. Most layers see one sample at a time; batch norm needs the whole batch.
LAYERS: dict[type, Callable] = {
    Conv2D: each_sample(lambda x, layer, w, b: conv2d(x, w, b, layer.stride,
                                                      layer.pads((len(x), len(x[0]), len(x[0][0]))))),
    ReLU: each_sample(lambda x, layer, w, b: relu(x)),
    MaxPool2D: each_sample(lambda x, layer, w, b: maxpool2d(x, layer.size, layer.step)),
    Flatten: each_sample(lambda x, layer, w, b: flatten(x)),
    Dense: each_sample(lambda x, layer, w, b: dense(x, w, b)),
    Tanh: each_sample(lambda x, layer, w, b: each(x, "tanh")),
    Sigmoid: each_sample(lambda x, layer, w, b: each(x, "sigmoid")),
    AvgPool2D: each_sample(lambda x, layer, w, b: avgpool2d(x, layer.size, layer.step)),
    BatchNorm: _batchnorm,
    Dropout: _dropout,
}


def cross_entropy(logits: list[list[Value]], labels: list[int]) -> Value:
    """Mean softmax cross-entropy of each sample's logits against its integer label."""
    losses = []
    for z, label in zip(logits, labels):
        # A plain float, not a Value: softmax is shift-invariant, so subtracting the max changes no
        # gradient, and it keeps every exp() at most 1, so none can overflow.
        m = max(v.data for v in z)
        shifted = [v - m for v in z]
        losses.append(sum(s.exp() for s in shifted).log() - shifted[label])
    return sum(losses) / len(losses)

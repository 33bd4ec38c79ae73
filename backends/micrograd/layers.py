"""The spec's layers and the loss, one sample at a time, on nested lists of Values."""
from __future__ import annotations

from typing import Callable

from fwbench.backends.micrograd.engine import Value
from fwbench.models.spec import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh

# One sample's activations are a (C, H, W) grid as lists x[c][h][w], or a flat list after flatten.
# Conv weights are w[out][in][kh][kw] and dense weights w[in][out], as in the canonical layout.


def conv2d(x: list, w: list, b: list, stride: int, padding: int) -> list:
    """Cross-correlation of x with each filter, plus its bias; the zero padding is implicit."""
    k = len(w[0][0])
    oh = (len(x[0]) + 2 * padding - k) // stride + 1
    ow = (len(x[0][0]) + 2 * padding - k) // stride + 1
    return [[[sum((w[o][c][i][j] * v for c, i, j, v in _patch(x, r * stride - padding, s * stride - padding, k)),
                  b[o])
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


def flatten(x: list) -> list:
    """A (C, H, W) grid as one list in C, H, W order."""
    return [v for plane in x for row in plane for v in row]


def dense(x: list, w: list, b: list) -> list:
    """x @ w + b, with w laid out (in, out)."""
    return [sum((x[i] * w[i][o] for i in range(len(x))), b[o]) for o in range(len(b))]


# Layer type -> op(x, layer, w, b) on one sample, w and b the layer's parameters as nested Values (None without).
LAYERS: dict[type, Callable] = {
    Conv2D: lambda x, layer, w, b: conv2d(x, w, b, layer.stride, layer.padding),
    ReLU: lambda x, layer, w, b: relu(x),
    MaxPool2D: lambda x, layer, w, b: maxpool2d(x, layer.size, layer.step),
    Flatten: lambda x, layer, w, b: flatten(x),
    Dense: lambda x, layer, w, b: dense(x, w, b),
    Tanh: lambda x, layer, w, b: each(x, "tanh"),
    Sigmoid: lambda x, layer, w, b: each(x, "sigmoid"),
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

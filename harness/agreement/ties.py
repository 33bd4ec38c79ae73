"""Subgradient conventions at ties, measured through the backend protocol, and inputs that hit them."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fwbench import backends
from fwbench import models
from fwbench.backends import numpy_backend
from fwbench.backends.engine import Tensor, winograd
from fwbench.backends.engine.layout import to_engine
from fwbench.backends.lowering import lower
from fwbench.models.params import Params, dropout_masks, init_buffers
from fwbench.models.spec import Conv2D, MaxPool2D, ModelSpec, ReLU

# One pixel x=1. For the pool probe, a 2x2 conv with padding 1 turns it into the 2x2 map
# out[i, j] = w[1-i, 1-j] * x, so all-ones weights give a 4-way tie in one 2x2 pool window.
PIXEL = {"name": "probe", "input": [1, 1, 1], "classes": 2}
POOL_PROBE = {**PIXEL, "layers": [
    {"type": "conv2d", "out_channels": 1, "kernel_size": 2, "padding": 1},
    {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 2}]}
RELU_PROBE = {**PIXEL, "layers": [
    {"type": "conv2d", "out_channels": 1, "kernel_size": 1},
    {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 2}]}
# Dense weights (1, -1) and a bias that makes both logits 0: softmax (1/2, 1/2), label 0, so the
# gradient reaching the single feature is exactly (1/2 - 1) * 1 + 1/2 * (-1) = -1.
READOUT = np.array([[1.0, -1.0]])
NAMED_ROUTES = {"first": [[1, 0], [0, 0]], "last": [[0, 0], [0, 1]],
                "split": [[0.25, 0.25], [0.25, 0.25]], "all": [[1, 1], [1, 1]]}


def probe(name: str, device: str = "cpu", dtype: str = "float64") -> dict:
    """{"relu_grad_at_zero": float, "maxpool_tie": "first"|"last"|"split"|"all"|"other: ..."} for NAME[@MODE]."""
    return {"relu_grad_at_zero": _relu_grad_at_zero(name, device, dtype),
            "maxpool_tie": _maxpool_tie(name, device, dtype)}


def _relu_grad_at_zero(name: str, device: str, dtype: str) -> float:
    """relu'(0), read off d(loss)/d(conv weight) when the pre-activation is exactly 0."""
    params = {"0.weight": np.zeros((1, 1, 1, 1)), "0.bias": np.zeros(1),
              "3.weight": READOUT.copy(), "3.bias": np.zeros(2)}
    dw = _conv_weight_grad(name, RELU_PROBE, params, device, dtype)
    # d(loss)/dw = relu'(0) * upstream * x, with x = 1.
    return _readable(dw.item() / _upstream(0.0, params["3.weight"], params["3.bias"]))


def _maxpool_tie(name: str, device: str, dtype: str) -> str:
    """Which of four tied maxima received the gradient, by name, or the measured 2x2 routing."""
    params = {"0.weight": np.ones((1, 1, 2, 2)), "0.bias": np.zeros(1),
              "3.weight": READOUT.copy(), "3.bias": np.array([-1.0, 1.0])}
    dw = _conv_weight_grad(name, POOL_PROBE, params, device, dtype)
    # out[i, j] depends only on w[1-i, 1-j], so flipping dw gives the gradient each output position got.
    route = np.flip(dw[0, 0]) / _upstream(1.0, params["3.weight"], params["3.bias"])
    route = [[_readable(v) for v in row] for row in route]
    for rule, want in NAMED_ROUTES.items():
        if route == want:
            return rule
    return f"other: {route}"


def _conv_weight_grad(name: str, spec: dict, params: Params, device: str, dtype: str) -> np.ndarray:
    """d(loss)/d(layer-0 weight) for the one-pixel input x=1 with label 0."""
    backend = backends.build(name, models.parse(spec), params, device=device, dtype=dtype)
    _, grads = backend.loss_and_grads(np.ones((1, 1, 1, 1), dtype=dtype), np.zeros(1, dtype=np.int64))
    return np.asarray(grads["0.weight"], dtype=np.float64)


def _upstream(h: float, w: np.ndarray, b: np.ndarray) -> float:
    """d(loss)/dh for one feature h read out by dense (w, b) into softmax cross-entropy, label 0."""
    logits = h * w[0] + b
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p[0] -= 1.0
    return float(p @ w[0])


def _readable(v: float) -> float:
    """v without float noise below 1e-9, and never -0.0."""
    return round(float(v), 9) + 0.0


def tie_case(spec: ModelSpec, params: Params, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, Params]:
    """A batch (x, y) and dyadic parameters whose forward pass is exact and full of relu zeros and pool ties."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, *spec.input)) < 0.5).astype(np.float64)
    y = rng.integers(0, spec.classes, n)
    # Weights on a grid of about a third of their scale (a power of two, so small integer multiples
    # of it): every activation is an exact dyadic sum, identical in any framework and summation
    # order, so all backends see the same ties; coarse steps and zero biases make exact zeros and
    # equal maxima common. Exact in float32 while the numerators fit 24 bits (true for the shipped specs).
    quantized = {}
    for key, value in params.items():
        value = np.asarray(value, dtype=np.float64)
        scale = float(np.abs(value).max())
        if key.endswith(".bias") or scale == 0.0:
            quantized[key] = np.zeros_like(value)
            continue
        step = 2.0 ** round(math.log2(scale / 2))
        quantized[key] = np.round(value / step) * step
    return x, y, quantized


# The layer types whose gradient is ambiguous at a tie: what count_ties calls their ties, and how it counts them
# in the layer's input. Every other type is smooth and only passes the values on.
TIE_COUNTS = {
    ReLU: ("relu_zeros", lambda h, layer: int(np.count_nonzero(h == 0))),
    MaxPool2D: ("pool_ties", lambda h, layer: _tied_windows(h, layer.size, layer.step)),
}


def count_ties(spec: ModelSpec, params: Params, x: np.ndarray, seed: int = 0) -> dict[str, int]:
    """How many relu inputs are exactly 0 and how many max-pool windows have a tied maximum, over all layers.

    Dropout drops the units agree's run of this seed drops in its one step."""
    h = to_engine(np.asarray(x, dtype=np.float64))  # the engine's channels-last layout, as its ops take it
    counts = {key: 0 for key, _ in TIE_COUNTS.values()}
    params = {k: Tensor(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    # A training pass, as loss_and_grads runs it: batch statistics, and the harness's masks of step 0.
    # The masks are canonical (N, C, H, W) like the harness's inputs: channels last, as the engine's ops take them.
    masks = {key: to_engine(mask) for key, mask in dropout_masks(spec, seed, 0, len(h)).items()}
    run = numpy_backend.Pass(True, init_buffers(spec, "float64"), masks=masks)
    for i, (op, layer) in enumerate(zip(lower(numpy_backend.LOWER, spec, "numpy"), spec.layers)):
        if type(layer) in TIE_COUNTS:
            key, count = TIE_COUNTS[type(layer)]
            counts[key] += count(h, layer)
        # The NumPy engine's op for the layer alone, unfused: the values every backend computes.
        h = op(Tensor(h), i, layer, params.get(f"{i}.weight"), params.get(f"{i}.bias"), run).data
    return counts


def winograd_layers(spec: ModelSpec, dtype: str) -> list[int]:
    """The conv layers the NumPy engine runs by Winograd at this dtype, rounding more than a direct conv does."""
    found = []
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Conv2D):
            c, h, w = spec.input_of(i)
            k = layer.kernel_size
            # applies() reads only the input's shape, dtype and array module.
            if winograd.applies(np.empty((1, h, w, c), dtype), (layer.out_channels, c, k, k), layer.stride,
                                layer.pads((c, h, w))):
                found.append(i)
    return found


def _tied_windows(h: np.ndarray, size: int, stride: int) -> int:
    """Windows of NHWC h (VALID, `stride` apart) whose maximum occurs more than once."""
    windows = sliding_window_view(h, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    best = windows.max(axis=(4, 5), keepdims=True)
    return int(np.count_nonzero((windows == best).sum(axis=(4, 5)) > 1))

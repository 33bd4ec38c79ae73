"""Specs and batches shared by the backend tests."""
import numpy as np

from fwbench import models

# Non-square multichannel input, stride, padding, an overlapping pool, two dense layers after a flatten.
WIDE = models.parse({"name": "wide", "input": [3, 11, 9], "classes": 5, "layers": [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 3, "stride": 1},
    {"type": "flatten"},
    {"type": "dense", "units": 7},
    {"type": "relu"},
    {"type": "dense", "units": 5},
]})
# tanh after a conv (its backward reaches a parameter) and sigmoid between two dense layers.
SQUASH = models.parse({"name": "squash", "input": [2, 6, 5], "classes": 3, "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
    {"type": "tanh"},
    {"type": "flatten"},
    {"type": "dense", "units": 4},
    {"type": "sigmoid"},
    {"type": "dense", "units": 3},
]})
# Every layer type the layers issue added, in places no shipped spec puts them: "same" padding with an even
# kernel at stride 2 (asymmetric), batch norm on a map and on features, an overlapping average pool, dropout
# on a map and on features. Not shipped: the engines were not tuned on it.
FRESH = models.parse({"name": "fresh", "input": [3, 9, 8], "classes": 4, "layers": [
    {"type": "conv2d", "out_channels": 5, "kernel_size": 4, "stride": 2, "padding": "same"},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "avgpool2d", "size": 3, "stride": 1},
    {"type": "dropout", "rate": 0.3},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "avgpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 6},
    {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3},
    {"type": "tanh"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 4},
]})
SPECS = {"tinycnn": models.get("tinycnn"), "cnn": models.get("cnn"), "mlp": models.get("mlp"), "wide": WIDE}


def batch(spec, n=6, seed=1):
    """Seeded normal inputs and random labels for a spec."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *spec.input)), rng.integers(0, spec.classes, n)


def relerr(a, b):
    """Max abs difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

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
SPECS = {"tinycnn": models.get("tinycnn"), "cnn": models.get("cnn"), "mlp": models.get("mlp"), "wide": WIDE}


def batch(spec, n=6, seed=1):
    """Seeded normal inputs and random labels for a spec."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *spec.input)), rng.integers(0, spec.classes, n)


def relerr(a, b):
    """Max abs difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

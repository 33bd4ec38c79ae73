"""Activations on plain arrays, into a given output (in place when it is the input), gradients read from the output."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.xp import module_of


def relu(z: np.ndarray, out: np.ndarray) -> None:
    """out = max(z, 0); a NaN stays NaN."""
    module_of(z).maximum(z, 0, out=out)


def relu_grad(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g where the output y > 0, else 0: relu'(0) = 0, torch's convention (y > 0 iff its input > 0)."""
    return g * (y > 0)


def tanh(z: np.ndarray, out: np.ndarray) -> None:
    module_of(z).tanh(z, out=out)


def tanh_grad(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g (1 - y^2), y = tanh(x)."""
    return g * (1 - y * y)


def sigmoid(z: np.ndarray, out: np.ndarray) -> None:
    """out = 1 / (1 + exp(-z)), written so that no exp overflows."""
    xp = module_of(z)
    e = xp.exp(-xp.abs(z))  # in (0, 1]: exp of a large positive number would overflow
    out[...] = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g y (1 - y), y = sigmoid(x)."""
    return g * (y * (1 - y))


# name -> (activation(z, out), gradient(g, out))
ACTIVATIONS = {"relu": (relu, relu_grad), "tanh": (tanh, tanh_grad), "sigmoid": (sigmoid, sigmoid_grad)}

"""Activations on plain arrays, into a given output (in place when it is the input), gradients read from the output."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.xp import module_of


def relu(z: np.ndarray, out: np.ndarray) -> None:
    """out = max(z, 0); a NaN stays NaN."""
    module_of(z).maximum(z, 0, out=out)


# Each gradient writes into out when given (which may be g itself), else into a new array. In place, relu's on 1.6M
# float32 values took 0.66 ms against 1.0: a new array of that size is written to memory not yet in cache.


def relu_grad(g: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """g where the output y > 0, else 0: relu'(0) = 0, torch's convention (y > 0 iff its input > 0)."""
    return module_of(g).multiply(g, y > 0, out=out)


def tanh(z: np.ndarray, out: np.ndarray) -> None:
    module_of(z).tanh(z, out=out)


def tanh_grad(g: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """g (1 - y^2), y = tanh(x)."""
    d = y * y
    module_of(y).subtract(1, d, out=d)
    return module_of(g).multiply(g, d, out=out)


def sigmoid(z: np.ndarray, out: np.ndarray) -> None:
    """out = 1 / (1 + exp(-z)), in four passes in place; where exp(-z) overflows to inf, out is exactly 0."""
    # The exact value there is below float32's smallest normal (z < -88) or float64's (z < -708). Written with
    # exp(-|z|) and where() instead, to keep exp from overflowing, it took 3-4x the time (2.5-2.7 ms against
    # 0.6-0.86 on 301K float32 values, sigm's first conv; 2.8x on a slice's 37K), and sigm's step 1/0.88 as long.
    xp = module_of(z)
    with np.errstate(over="ignore"):
        xp.negative(z, out=out)
        xp.exp(out, out=out)
        out += 1
        xp.reciprocal(out, out=out)


def sigmoid_grad(g: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """g y (1 - y), y = sigmoid(x)."""
    d = 1 - y
    d *= y
    if out is None:
        d *= g
        return d
    return module_of(g).multiply(d, g, out=out)


# Each activation's forward and backward, in elementwise passes' worth of work (parallel.value_work): relu's max, and
# its gradient's compare and multiply, are 4; tanh's took 2.9x relu's time here and sigmoid's 2.1x (401K values).
PASSES = {"relu": 4, "tanh": 12, "sigmoid": 8}
# name -> (activation(z, out), gradient(g, out))
ACTIVATIONS = {"relu": (relu, relu_grad), "tanh": (tanh, tanh_grad), "sigmoid": (sigmoid, sigmoid_grad)}

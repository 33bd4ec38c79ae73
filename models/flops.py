"""FLOPs of one training step, counted from the spec: forward and backward per layer, and the loss.

The rules (docs/performance.md, "Counting FLOPs", has them in full):
- a multiply-add is 2 FLOPs. conv2d forward: 2 N OH OW O C kh kw, plus N OH OW O for the bias; dense forward:
  2 N in out + N out. Padded zeros are multiplied like any input, as the frameworks do;
- backward of conv2d and dense: the weight gradient costs the forward product again, plus the bias gradient's
  reduction (N OH OW O, or N out); the input gradient costs the product once more, but only where the layer's
  input needs a gradient: some earlier layer has parameters. No framework forms d(loss)/d(image);
- every other layer is counted per element (per output for pooling) with the small constants of RULES; a layer
  without parameters whose input needs no gradient has no backward at all. These are minor: conv and dense dominate;
- the loss, softmax cross-entropy, is LOSS_PER_LOGIT per logit, forward and backward together;
- the optimizer update is not counted: it is per parameter, not per image, and no model-FLOPs figure counts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from fwbench.models.spec import ModelSpec, Shape

# Softmax cross-entropy per logit: forward max, subtract, exp, sum (4); backward divide, subtract, scale (3).
LOSS_PER_LOGIT = 7


@dataclass(frozen=True)
class LayerFlops:
    """One layer's FLOPs in a training step at some batch size."""
    index: int
    type: str
    forward: int
    backward: int


@dataclass(frozen=True)
class Rule:
    """A layer type's costs, each a function of (layer, input shape, output shape) for one image."""
    forward: Callable
    weights: Callable = lambda layer, inp, out: 0  # backward into the layer's own parameters
    inputs: Callable = lambda layer, inp, out: 0   # backward into its input, when that needs a gradient


def _product(layer, inp: Shape, out: Shape) -> int:
    """Multiply-adds of a conv or dense layer's one product, at 2 FLOPs each."""
    return 2 * layer.scalar_ops(inp, out)  # the layer's multiply-adds, as the spec counts them for micrograd


def _with_bias(layer, inp: Shape, out: Shape) -> int:
    return _product(layer, inp, out) + math.prod(out)


def _each(k: int) -> Callable:
    """k FLOPs per output element."""
    return lambda layer, inp, out: k * math.prod(out)


def _window(layer, inp: Shape, out: Shape) -> int:
    """An average pool: size² adds and one divide per output, forward; backward a divide and size² adds."""
    return layer.scalar_ops(inp, out)


RULES: dict[str, Rule] = {
    "conv2d": Rule(_with_bias, _with_bias, _product),
    "dense": Rule(_with_bias, _with_bias, _product),
    "relu": Rule(_each(1), inputs=_each(1)),  # a comparison; backward, the mask
    # (size² - 1) comparisons per output; backward, each output's gradient added at its window's maximum
    "maxpool2d": Rule(lambda layer, inp, out: math.prod(out) * (layer.size ** 2 - 1), inputs=_each(1)),
    "avgpool2d": Rule(_window, inputs=_window),
    # Training mode, per value: mean and variance sums, centre, square (4), scale by 1/std, gamma, add beta (3);
    # backward, sum(dy) and sum(dy x̂) for beta and gamma (3), then the input gradient (5). Per-channel terms
    # (sqrt, running statistics) are left out.
    "batchnorm": Rule(_each(7), _each(3), _each(5)),
    "dropout": Rule(_each(1), inputs=_each(1)),  # one multiply by the scaled mask, each way
    "tanh": Rule(_each(1), inputs=_each(3)),     # the function as one FLOP; backward dy (1 - t²)
    "sigmoid": Rule(_each(3), inputs=_each(3)),  # exp, add, divide; backward dy s (1 - s)
    "flatten": Rule(_each(0)),
}


def layer_flops(spec: ModelSpec, batch: int) -> list[LayerFlops]:
    """Each layer's forward and backward FLOPs for a batch, in layer order."""
    out, needs_grad = [], False  # needs_grad: the current layer's input needs a gradient
    for i, layer in enumerate(spec.layers):
        if layer.type not in RULES:
            raise ValueError(f"no FLOP rule for layer type {layer.type!r}; add one to models/flops.py")
        rule, inp, shape = RULES[layer.type], spec.input_of(i), spec.shapes[i]
        backward = rule.weights(layer, inp, shape) + (rule.inputs(layer, inp, shape) if needs_grad else 0)
        out.append(LayerFlops(i, layer.type, batch * rule.forward(layer, inp, shape), batch * backward))
        needs_grad = needs_grad or bool(layer.param_shapes(inp))
    return out


def step_flops(spec: ModelSpec, batch: int) -> int:
    """FLOPs of one training step: every layer forward and backward, and the loss; not the optimizer."""
    return sum(c.forward + c.backward for c in layer_flops(spec, batch)) + batch * spec.classes * LOSS_PER_LOGIT

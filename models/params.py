"""Canonical parameters: one dict layout shared by every backend, and the seeded initialiser."""
from __future__ import annotations

import math

import numpy as np

from fwbench.models.spec import ModelSpec

# Keys are "{i}.weight" / "{i}.bias" with i the layer index in the spec.
# Conv weight is (out, in, kh, kw); dense weight is (in, out); flatten order is C, H, W.
Params = dict[str, np.ndarray]


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit of a conv (out, in, kh, kw) or dense (in, out) weight."""
    return shape[1] * shape[2] * shape[3] if len(shape) == 4 else shape[0]


def init_params(spec: ModelSpec, seed: int = 0, dtype: str = "float32") -> Params:
    """PyTorch's default scheme: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded."""
    # kaiming_uniform_(a=sqrt(5)) as torch.nn.Conv2d/Linear use reduces to this bound.
    rng = np.random.default_rng(seed)
    shapes = spec.param_shapes()
    out: Params = {}
    for key, shape in shapes.items():
        weight_shape = shapes[key.replace(".bias", ".weight")]
        bound = 1.0 / math.sqrt(fan_in(weight_shape))
        out[key] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return out


def check(spec: ModelSpec, params: Params) -> None:
    """Raise ValueError unless params has exactly the spec's canonical names and shapes."""
    want = spec.param_shapes()
    if set(params) != set(want):
        missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        raise ValueError(f"parameters do not match spec '{spec.name}': missing {missing}, unexpected {extra}")
    for key, shape in want.items():
        if tuple(params[key].shape) != shape:
            raise ValueError(f"parameter '{key}' has shape {tuple(params[key].shape)}, spec '{spec.name}' needs {shape}")

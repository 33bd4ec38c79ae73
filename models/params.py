"""Canonical parameters: one dict layout shared by every backend, and the seeded initialiser."""
from __future__ import annotations

import numpy as np

from fwbench.models.spec import Dropout, ModelSpec, fan_in

# Keys are "{i}.weight" / "{i}.bias" with i the layer index in the spec.
# Conv weight is (out, in, kh, kw); dense weight is (in, out); flatten order is C, H, W.
# Buffers ("{i}.running_mean", "{i}.running_var") and dropout masks ("{i}.mask", NCHW) use the same form.
Params = dict[str, np.ndarray]
__all__ = ["Params", "check", "check_masks", "dropout_masks", "fan_in", "init_buffers", "init_params"]


def init_params(spec: ModelSpec, seed: int = 0, dtype: str = "float32") -> Params:
    """Each layer's own starting values (PyTorch's defaults), drawn in layer order from one seeded generator."""
    rng = np.random.default_rng(seed)
    return {f"{i}.{suffix}": value.astype(dtype) for i, layer in enumerate(spec.layers)
            for suffix, value in layer.initial_params(spec.input_of(i), rng).items()}


def init_buffers(spec: ModelSpec, dtype: str = "float32") -> Params:
    """Starting buffers: batch norm's running mean 0 and running variance 1."""
    return {f"{i}.{suffix}": value.astype(dtype) for i, layer in enumerate(spec.layers)
            for suffix, value in layer.initial_buffers(spec.input_of(i)).items()}


def dropout_masks(spec: ModelSpec, seed: int, step: int, batch: int) -> Params:
    """The harness's keep-masks for one step, "{i}.mask" -> bool (batch, *input of layer i), from (seed, step, i)."""
    # Derived, not drawn from a running generator: any step's masks can be made again on their own.
    return {f"{i}.mask": np.random.default_rng((seed, step, i)).random((batch, *spec.input_of(i))) >= layer.rate
            for i, layer in enumerate(spec.layers) if isinstance(layer, Dropout)}


def check(spec: ModelSpec, params: Params, what: str = "parameters") -> None:
    """ValueError unless params has exactly the spec's canonical names and shapes (what="buffers": its buffers)."""
    want = spec.param_shapes() if what == "parameters" else spec.buffer_shapes()
    if set(params) != set(want):
        missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        raise ValueError(f"{what} do not match spec '{spec.name}': missing {missing}, unexpected {extra}")
    for key, shape in want.items():
        if tuple(params[key].shape) != shape:
            raise ValueError(f"{what[:-1]} '{key}' has shape {tuple(params[key].shape)}, "
                             f"spec '{spec.name}' needs {shape}")


def check_masks(spec: ModelSpec, masks: Params, batch: int) -> None:
    """Raise ValueError unless masks has one "{i}.mask" of shape (batch, *input of i) per dropout layer."""
    want = {f"{i}.mask": (batch, *spec.input_of(i)) for i, layer in enumerate(spec.layers)
            if isinstance(layer, Dropout)}
    if set(masks) != set(want):
        raise ValueError(f"dropout masks do not match spec '{spec.name}': expected {sorted(want)}, got {sorted(masks)}")
    for key, shape in want.items():
        if tuple(np.shape(masks[key])) != shape:
            raise ValueError(f"mask '{key}' has shape {tuple(np.shape(masks[key]))}; a batch of {batch} needs {shape}")

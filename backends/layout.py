"""Canonical (NCHW) <-> channels-last (NHWC) parameter, buffer and mask layouts, in NumPy only."""
from __future__ import annotations

import numpy as np

from fwbench.models.params import Params
from fwbench.models.spec import Dense, Flatten, ModelSpec

# Channels-last layout keeps the canonical keys. Conv weight is (kh, kw, in, out) (HWIO).
# Flattening an NHWC tensor gives features in H, W, C order, so every layer that reads a flatten of a
# (C, H, W) activation sees them permuted: the dense weight's rows, batch norm's vectors, dropout's masks.


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """An NCHW batch as a contiguous NHWC array."""
    assert x.ndim == 4, f"expected an NCHW batch, got shape {x.shape}"
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def flat_inputs(spec: ModelSpec) -> dict[int, tuple[int, ...]]:
    """For each layer reading a flatten of a (C, H, W) activation, up to the dense that consumes it, that (C, H, W)."""
    out: dict[int, tuple[int, ...]] = {}
    pending = None  # what the last flatten consumed, until a dense mixes its features
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Flatten):
            shape = spec.input_of(i)
            pending = shape if len(shape) == 3 else None
        elif pending is not None:
            out[i] = pending  # relu, batch norm, dropout keep the features where they are
            if isinstance(layer, Dense):
                pending = None
    return out


def flatten_sources(spec: ModelSpec) -> dict[int, tuple[int, ...]]:
    """For each dense layer fed by a flatten of a (C, H, W) activation, that (C, H, W)."""
    return {i: s for i, s in flat_inputs(spec).items() if isinstance(spec.layers[i], Dense)}


def channels_last_shapes(spec: ModelSpec, what: str = "parameters") -> dict[str, tuple[int, ...]]:
    """Parameter (what="buffers": buffer) shapes in channels-last layout, under the canonical keys."""
    shapes = spec.param_shapes() if what == "parameters" else spec.buffer_shapes()
    return {k: (s[2], s[3], s[1], s[0]) if len(s) == 4 else s for k, s in shapes.items()}


def to_channels_last(spec: ModelSpec, params: Params, what: str = "parameters") -> Params:
    """Canonical parameters (what="buffers": buffers) in channels-last layout, as fresh arrays."""
    return _convert(spec, params, what, forward=True)


def from_channels_last(spec: ModelSpec, params: Params, what: str = "parameters") -> Params:
    """Channels-last parameters, gradients (what="buffers": buffers) in canonical layout, as fresh arrays."""
    return _convert(spec, params, what, forward=False)


def masks_to_channels_last(spec: ModelSpec, masks: Params) -> Params:
    """Canonical dropout masks ("{i}.mask", (N, C, H, W) or (N, F)) in channels-last layout, as fresh arrays."""
    sources = flat_inputs(spec)
    out: Params = {}
    for key, mask in masks.items():
        i, mask = int(key.split(".")[0]), np.asarray(mask)
        if mask.ndim == 4:
            out[key] = nchw_to_nhwc(mask)
        else:
            out[key] = _permute(mask, sources[i], 1, True) if i in sources else mask.copy()
    return out


def _permute(v: np.ndarray, chw: tuple[int, ...], axis: int, forward: bool) -> np.ndarray:
    """v with its axis of C*H*W features reordered from C, H, W to H, W, C (forward), or back."""
    order = np.arange(v.shape[axis]).reshape(chw).transpose(1, 2, 0).ravel()
    return np.take(v, order if forward else np.argsort(order), axis=axis)


def _convert(spec: ModelSpec, params: Params, what: str, forward: bool) -> Params:
    canonical = spec.param_shapes() if what == "parameters" else spec.buffer_shapes()
    native = channels_last_shapes(spec, what)
    src, dst = (canonical, native) if forward else (native, canonical)
    sources = flat_inputs(spec)
    out: Params = {}
    for key in canonical:
        v = np.asarray(params[key])
        assert v.shape == src[key], f"'{key}' has shape {v.shape}, expected {src[key]}"
        i = int(key.split(".")[0])
        if v.ndim == 4:
            v = v.transpose(2, 3, 1, 0) if forward else v.transpose(3, 2, 0, 1)
        elif i in sources and (v.ndim == 2 or not isinstance(spec.layers[i], Dense)):
            # a dense weight's rows, or batch norm's per-feature vectors; a dense bias is per output unit
            v = _permute(v, sources[i], 0, forward)
        out[key] = np.array(v, order="C")  # always a copy: callers may hand it to a framework
        assert out[key].shape == dst[key], f"'{key}' became {out[key].shape}, expected {dst[key]}"
    return out

"""Canonical (NCHW) <-> channels-last (NHWC) parameter layouts, in NumPy only."""
from __future__ import annotations

import numpy as np

from fwbench.models.params import Params
from fwbench.models.spec import Dense, Flatten, ModelSpec

# Channels-last layout keeps the canonical keys. Conv weight is (kh, kw, in, out) (HWIO).
# Dense weight stays (in, out), but when a flatten of a (C, H, W) activation feeds it, its
# rows follow the H, W, C order that flattening an NHWC tensor produces.


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """An NCHW batch as a contiguous NHWC array."""
    assert x.ndim == 4, f"expected an NCHW batch, got shape {x.shape}"
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def flatten_sources(spec: ModelSpec) -> dict[int, tuple[int, ...]]:
    """For each dense layer fed by a flatten of a (C, H, W) activation, that (C, H, W)."""
    out: dict[int, tuple[int, ...]] = {}
    pending = None  # what the last flatten consumed, until a dense reads it (relu may sit between)
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Flatten):
            shape = spec.input_of(i)
            pending = shape if len(shape) == 3 else None
        elif isinstance(layer, Dense):
            if pending is not None:
                out[i] = pending
            pending = None
    return out


def channels_last_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Parameter shapes in channels-last layout, under the canonical keys."""
    return {k: (s[2], s[3], s[1], s[0]) if len(s) == 4 else s for k, s in spec.param_shapes().items()}


def to_channels_last(spec: ModelSpec, params: Params) -> Params:
    """Canonical parameters in channels-last layout, as fresh arrays."""
    return _convert(spec, params, forward=True)


def from_channels_last(spec: ModelSpec, params: Params) -> Params:
    """Channels-last parameters (or gradients) in canonical layout, as fresh arrays."""
    return _convert(spec, params, forward=False)


def _convert(spec: ModelSpec, params: Params, forward: bool) -> Params:
    canonical, native = spec.param_shapes(), channels_last_shapes(spec)
    src, dst = (canonical, native) if forward else (native, canonical)
    sources = flatten_sources(spec)
    out: Params = {}
    for key in canonical:
        v = np.asarray(params[key])
        assert v.shape == src[key], f"'{key}' has shape {v.shape}, expected {src[key]}"
        i = int(key.split(".")[0])
        if key.endswith(".weight") and v.ndim == 4:
            v = v.transpose(2, 3, 1, 0) if forward else v.transpose(3, 2, 0, 1)
        elif key.endswith(".weight") and i in sources:
            c, h, w = sources[i]
            v = (v.reshape(c, h, w, -1).transpose(1, 2, 0, 3) if forward
                 else v.reshape(h, w, c, -1).transpose(2, 0, 1, 3)).reshape(c * h * w, -1)
        out[key] = np.array(v, order="C")  # always a copy: callers may hand it to a framework
        assert out[key].shape == dst[key], f"'{key}' became {out[key].shape}, expected {dst[key]}"
    return out

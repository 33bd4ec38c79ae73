"""The engine's one layout conversion: images are channels last (NHWC) inside it, canonical NCHW outside."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.xp import module_of


def to_engine(x: np.ndarray) -> np.ndarray:
    """A canonical NCHW array as the engine's contiguous NHWC; anything not 4-D as it is."""
    # With one channel the two layouts are the same bytes, and ascontiguousarray copies nothing.
    return module_of(x).ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_canonical(x: np.ndarray) -> np.ndarray:
    """An engine NHWC array as contiguous NCHW; anything not 4-D as it is."""
    return module_of(x).ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def chw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical (C, H, W) of an NHWC array's shape, as the spec's layers take it."""
    return (shape[3], shape[1], shape[2])

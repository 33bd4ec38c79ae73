"""The array module (numpy or cupy) that owns an op's input arrays."""
from __future__ import annotations

import sys
from types import ModuleType

import numpy as np


def module_of(*arrays) -> ModuleType:
    """cupy if any argument is a CuPy array, numpy otherwise; never imports cupy itself."""
    for a in arrays:
        t = type(a)
        # Called once per op on the CPU's hot path: one identity test for the common case.
        if t is not np.ndarray and t.__module__.partition(".")[0] == "cupy":
            return sys.modules["cupy"]  # an array of cupy's type means cupy is imported
    return np

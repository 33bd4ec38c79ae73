"""Keras's backend for this process, chosen before keras is imported and checked after."""
from __future__ import annotations

import os
import sys

from fwbench.backends.base import BackendError

# TensorFlow's C++ start-up notices (oneDNN, CPU features) would otherwise print a page to stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def select(wanted: str, what: str) -> None:
    """Ask for Keras on `wanted` (tensorflow, jax) before keras is imported; BackendError if it already runs on another.

    Keras reads KERAS_BACKEND once per process, at its first import: `what` then needs a process of its own."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = wanted
        return
    found = sys.modules["keras"].backend.backend()
    if found != wanted:
        raise BackendError(f"{what} needs Keras on {wanted}, but this process already runs Keras on {found} (Keras "
                           "picks its backend once per process); run it in a command of its own")

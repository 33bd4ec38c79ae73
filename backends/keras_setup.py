"""Keras on TensorFlow for this process: its environment set before keras is imported, and checked after."""
from __future__ import annotations

import os
import sys

# Keras picks its backend once per process, when it is first imported; TensorFlow's C++ start-up notices (oneDNN,
# CPU features) would otherwise print a page to stderr. Import this module before keras.
if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def check(backend: str, what: str) -> None:
    """ImportError unless keras runs on tensorflow (backend: keras.backend.backend()); `what` needs it."""
    if backend != "tensorflow":
        raise ImportError(f"keras was imported on its {backend} backend before {what}, which needs tensorflow; "
                          "run it in a process of its own")

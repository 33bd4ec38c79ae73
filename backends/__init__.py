"""Registry of built-in backends, loaded by name without importing any framework up front."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from backends.base import Backend, BackendError, OptimizerConfig

__all__ = ["Backend", "BackendError", "OptimizerConfig", "BUILTIN", "load", "names", "missing"]


@dataclass(frozen=True)
class Entry:
    target: str                 # "module:Class"
    requires: tuple[str, ...]   # top-level modules that must be importable
    install: str                # how to get them


BUILTIN: dict[str, Entry] = {
    "numpy": Entry("backends.numpy_backend:NumpyBackend", ("numpy",), "pip install numpy"),
    "torch": Entry("backends.torch_backend:TorchBackend", ("torch",), "pip install 'fwbench[torch]'"),
    "flax": Entry("backends.flax_backend:FlaxBackend", ("jax", "flax", "optax"), "pip install 'fwbench[flax]'"),
    "micrograd": Entry("backends.micrograd_backend:MicrogradBackend", ("numpy",), "built in; needs only numpy"),
}


def names() -> list[str]:
    """Names of the built-in backends."""
    return list(BUILTIN)


def missing(name: str) -> list[str]:
    """The framework modules a backend needs that are not installed."""
    return [m for m in _entry(name).requires if importlib.util.find_spec(m) is None]


def load(name: str) -> type[Backend]:
    """The backend class for a name; BackendError when unknown or its framework is missing."""
    entry = _entry(name)
    absent = missing(name)
    if absent:
        raise BackendError(f"backend '{name}' needs {', '.join(absent)}, which is not installed; "
                           f"install it with: {entry.install}")
    module, cls = entry.target.split(":")
    return getattr(importlib.import_module(module), cls)


def _entry(name: str) -> Entry:
    if name not in BUILTIN:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(BUILTIN)}")
    return BUILTIN[name]

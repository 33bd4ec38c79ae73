"""Set up one training run: resolve the device, make the weights, load and normalise the data."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import backends
from backends.base import Backend, BackendError
from harness.data import load_mnist, normalize
from models import ModelSpec
from models.params import init_params

MNIST_SHAPE = (1, 28, 28)


@dataclass
class Dataset:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str


def resolve_device(cls: type[Backend], device: str) -> str:
    """'auto' picks cuda when the backend sees one, else cpu."""
    if device == "auto":
        return "cuda" if "cuda" in cls.devices() else "cpu"
    return device


def make_backend(name: str, spec: ModelSpec, *, device: str, dtype: str, seed: int, init: str) -> Backend:
    """A backend ("name" or "name@mode") built from the canonical weights of `seed`, or its native initialiser."""
    device = resolve_device(backends.load(name), device)
    params = init_params(spec, seed, dtype) if init == "canonical" else None
    return backends.build(name, spec, params, device=device, dtype=dtype, seed=seed)


def mnist_for(spec: ModelSpec, dtype: str, data_dir: str | None, limit: int | None = None) -> Dataset:
    """Normalised NCHW MNIST, optionally the first `limit` training and test images."""
    if spec.input != MNIST_SHAPE:
        raise BackendError(f"model '{spec.name}' takes input {list(spec.input)}, but MNIST images are "
                           f"{list(MNIST_SHAPE)}; use a spec with input = [1, 28, 28]")
    data = load_mnist(data_dir)
    n_train, n_test = (limit, limit) if limit else (len(data.train_x), len(data.test_x))
    return Dataset(normalize(data.train_x[:n_train], dtype), data.train_y[:n_train].astype(np.int64),
                   normalize(data.test_x[:n_test], dtype), data.test_y[:n_test].astype(np.int64),
                   data.source)

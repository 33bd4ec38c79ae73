"""Set up one training run: resolve the device, make the weights, load and normalise the data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fwbench import backends
from fwbench.backends.base import Backend, BackendError, OptimizerConfig
from fwbench.harness.data import load_mnist, normalize
from fwbench.models import ModelSpec, SpecError
from fwbench.models.memory import estimate, human
from fwbench.models.params import init_params

MNIST_SHAPE = (1, 28, 28)
MNIST_CLASSES = 10  # labels 0..9, for checks made before the data is loaded


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
    check_labels(spec, data.train_y[:n_train], data.test_y[:n_test])
    return Dataset(normalize(data.train_x[:n_train], dtype), data.train_y[:n_train].astype(np.int64),
                   normalize(data.test_x[:n_test], dtype), data.test_y[:n_test].astype(np.int64),
                   data.source)


def check_labels(spec: ModelSpec, *labels: np.ndarray) -> None:
    """Refuse data whose labels the spec has no logit for, before a framework fails on an index."""
    check_classes(spec, 1 + max((int(y.max()) for y in labels if len(y)), default=-1))


def check_classes(spec: ModelSpec, classes: int) -> None:
    """Refuse a spec with fewer logits than the data has classes."""
    if classes > spec.classes:
        raise SpecError(f"model '{spec.name}' has classes = {spec.classes}, but the data has {classes} classes "
                        f"(labels 0..{classes - 1}); set classes = {classes} and the last dense layer's units "
                        f"to {classes}")


def check_memory(spec: ModelSpec, batch_size: int, dtype: str, optimizer: OptimizerConfig, device: str,
                 extra: tuple[int, str, str] = (0, "", "")) -> None:
    """Refuse, before allocating, a run whose estimate exceeds the memory available here."""
    # extra: bytes a command keeps besides the model (agree's batches), what they are, and the option that sets them.
    need = estimate(spec, batch_size, dtype, optimizer.name, optimizer.momentum)
    # On a GPU the activations and optimizer state live on the device; the host still holds the weights.
    host = (need.weights if device == "cuda" else need.total) + extra[0]
    have = available_memory()
    if have is None or host <= have[0]:
        return
    parts = need.parts() + (f", {extra[1]} {human(extra[0])}" if extra[0] else "")
    fix = "use fewer units or channels, " + (f"a smaller --batch-size, or fewer {extra[2]}" if extra[0]
                                             else "or a smaller --batch-size")
    raise SpecError(f"model '{spec.name}' needs about {human(host)} to train at batch {batch_size} in {dtype} "
                    f"({parts}); this machine has {human(have[0])} available of {human(have[1])}; {fix}")


def available_memory() -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo; None where there is none."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None

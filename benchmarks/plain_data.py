"""MNIST and the cnn recipe's data pipeline in a few lines of NumPy, for the plain loops; no fwbench code."""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
MEAN, STD = 0.1307, 0.3081
LR, EPOCHS, SHIFT = 1e-3, 5, 1  # the cnn recipe: Adam 1e-3, 5 epochs, 1-pixel shifts


def data_dir() -> Path:
    """$FWBENCH_DATA, else the fwbench cache ($XDG_CACHE_HOME or ~/.cache)/fwbench/mnist."""
    if os.environ.get("FWBENCH_DATA"):
        return Path(os.environ["FWBENCH_DATA"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "fwbench" / "mnist"


def read_idx(path: Path) -> np.ndarray:
    """A uint8 array from a plain or gzipped IDX file."""
    buf = path.read_bytes()
    if path.suffix == ".gz":
        buf = gzip.decompress(buf)
    dims = buf[3]
    shape = tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(buf, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """The four MNIST arrays (uint8) from a folder of IDX files, plain or .gz."""
    folder = Path(folder) if folder else data_dir()
    out = {}
    for key, name in FILES.items():
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{folder}: no {name}(.gz); set FWBENCH_DATA, or run "
                                    f"`fwbench train` once so it caches MNIST there")
        out[key] = read_idx(path)
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) as float32 NCHW ((x / 255) - mean) / std."""
    # Computed in float64 per pixel value, then rounded once: the same numbers as fwbench's table.
    table = ((np.arange(256) / 255 - MEAN) / STD).astype(np.float32)
    return table[x].reshape(len(x), 1, 28, 28)


def shift(x: np.ndarray, seed: int, epoch: int, s: int = SHIFT) -> np.ndarray:
    """NCHW images each moved by up to s pixels in y and x, the border filled with x's minimum."""
    n, _, h, w = x.shape
    rng = np.random.default_rng((seed, epoch, 1))  # a stream apart from batch_order's
    dy, dx = rng.integers(0, 2 * s + 1, n), rng.integers(0, 2 * s + 1, n)
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=x.min())
    out = np.empty_like(x)
    for a in range(2 * s + 1):
        for b in range(2 * s + 1):
            rows = (dy == a) & (dx == b)
            out[rows] = padded[rows, :, a:a + h, b:b + w]
    return out


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of one epoch from a permutation seeded by (seed, epoch); the last may be short."""
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def epoch_batches(images: np.ndarray, labels: np.ndarray, seed: int, epoch: int,
                  batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch's (x float32 NCHW, y int64) batches from normalised images, shifted and shuffled."""
    moved = shift(images, seed, epoch)
    return [(moved[idx], labels[idx].astype(np.int64)) for idx in batch_order(len(images), batch_size, seed, epoch)]


def first_batches(count: int, seed: int = 0, batch_size: int = 64, folder=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` training batches of the recipe, epoch after epoch."""
    data = load_mnist(folder)
    images, out, epoch = normalize(data["train_x"]), [], 0
    while len(out) < count:
        out += epoch_batches(images, data["train_y"], seed, epoch, batch_size)
        epoch += 1
    return out[:count]


def cosine_lrs(count: int, batch_size: int = 64, epochs: int = EPOCHS, n: int = 60000,
               lr: float = LR) -> list[float]:
    """Learning rates of the first `count` steps of a per-step cosine decay to 0 over `epochs` epochs."""
    total = epochs * math.ceil(n / batch_size)
    return [lr * 0.5 * (1.0 + math.cos(math.pi * t / total)) for t in range(count)]

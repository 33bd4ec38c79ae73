"""IDX files (LeCun's MNIST format) for uint8 arrays: strict parsing and atomic writing."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from fwbench.harness.atomic import atomic_write
from fwbench.harness.data.errors import DataError

UINT8 = 0x08  # the only IDX element type MNIST uses


def parse_idx(buf: bytes, name: str, ndim: int | None = None) -> np.ndarray:
    """A read-only uint8 array from raw (not gzipped) IDX bytes; name is used in errors."""
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic {buf[:4].hex() or 'empty'}); "
                        f"replace it with a fresh copy")
    dtype, dims = buf[2], buf[3]
    if dtype != UINT8:
        raise DataError(f"{name}: IDX element type 0x{dtype:02x} is not uint8 (0x08); "
                        f"this is not an MNIST file")
    if ndim is not None and dims != ndim:
        raise DataError(f"{name}: IDX magic 0x{int.from_bytes(buf[:4], 'big'):08x} means {dims}-D "
                        f"data, expected {ndim}-D (magic 0x{0x800 + ndim:08x}); "
                        f"is it the wrong file?")
    header = 4 + 4 * dims
    if dims == 0 or len(buf) < header:
        raise DataError(f"{name}: IDX header is truncated or has no dimensions; "
                        f"replace it with a fresh copy")
    shape = tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    want = header + math.prod(shape)  # Python ints: a forged header cannot overflow
    if len(buf) != want:
        what = "truncated" if len(buf) < want else "has trailing bytes"
        raise DataError(f"{name}: {what} ({len(buf)} bytes, header {shape} needs {want}); "
                        f"replace it with a fresh copy")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(shape)


def gunzip(buf: bytes, name: str) -> bytes:
    """Decompressed bytes, or DataError naming the file if the gzip stream is bad."""
    try:
        return gzip.decompress(buf)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: corrupt gzip ({e}); replace it with a fresh copy") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read a plain or .gz IDX file into a read-only uint8 array, checking it exactly."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix == ".gz":
        buf = gunzip(buf, str(path))
    return parse_idx(buf, str(path), ndim)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX writing needs a uint8 array with 1..255 dims, got {array.dtype} {array.shape}")
    header = bytes([0, 0, UINT8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped if path ends in .gz), atomically."""
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same array, same bytes
    atomic_write(path, data)

"""Reading a spec file: a regular file of at most MAX_SPEC_BYTES of UTF-8 TOML, or one line saying what it is."""
from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from fwbench.models.spec import ModelSpec, SpecError, parse

# Shipped specs are under 1 KiB; the cap stops a device or a wrong path from being read without end.
MAX_SPEC_BYTES = 2**20
EXPECTED = "expected a TOML spec file"


def load(path: str | Path) -> ModelSpec:
    """Load and validate a spec from a TOML file."""
    path = Path(path)
    raw = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); {EXPECTED}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse(data, str(path))


def _read(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES of a regular file, or a SpecError saying what the path is instead."""
    try:
        # Non-blocking, so a FIFO with no writer is refused below instead of hanging the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory; {EXPECTED}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot open it ({e.strerror}); {EXPECTED}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"{path}: is a directory; {EXPECTED}")
        if not stat.S_ISREG(mode):
            raise SpecError(f"{path}: is not a regular file (it is {_kind(mode)}); {EXPECTED}")
        raw = _read_fd(fd, MAX_SPEC_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 2**20} MiB; {EXPECTED} (a spec is a few lines)")
    return raw


def _read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes, stopping at the end of the file."""
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "neither a file nor a directory"

"""Files replaced in one step, so a reader never sees half of one."""
from __future__ import annotations

import errno
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

MAX_CLAIMS = 1000  # names tried a second before giving up: far beyond any number of runs started together


class ResultsMoved(OSError):
    """The results are whole, but in a fallback file, not where --out said; the message says where."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_file():  # /dev/stdout, a pipe: write through it, never replace it with a file
        with open(path, "wb") as f:
            f.write(data)
        return
    # open(..., "xb") rather than mkstemp: the file gets the umask's permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # else a crash soon after the rename can leave an empty file under the name
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, doc) -> None:
    """atomic_write of doc as indented JSON."""
    atomic_write(path, encode_json(doc))


def encode_json(doc) -> bytes:
    """doc as the indented JSON every results file uses."""
    return json.dumps(doc, indent=1).encode()


def stamped(stem: str, suffix: str = ".json", clock=time.localtime) -> str:
    """stem-YYYYmmdd-HHMMSS.suffix, the local time now."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', clock())}{suffix}"


def ensure_dir(path: Path, option: str = "--out") -> Path:
    """path as a directory, made if missing, or ValueError in one line naming the option and what was expected."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; give a directory")
    _check_parents(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot make this directory ({e.strerror or e}); give a writable one") \
            from None
    return path


def ensure_parent(path: Path, option: str = "--out") -> Path:
    """path as a file to write, its folder made if missing, or ValueError in one line saying what was expected."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    _check_parents(path, option)
    ensure_dir(path.parent, option)
    return path


def _check_parents(path: Path, option: str) -> None:
    """ValueError when the nearest existing folder above path is a file."""
    for part in path.parents:
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{option} {path}: {part} is a file, not a directory")
            return


def claim(directory: Path, name: str, data: bytes, option: str = "--out") -> Path:
    """A new file in directory holding data, under name or, when taken, name-2, name-3...; never an existing file."""
    directory = ensure_dir(directory, option)
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    tmp = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        _write_new(tmp, data)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{option} {directory}: cannot write there ({e.strerror or e}); give a writable directory") \
            from None
    try:
        for n in range(1, MAX_CLAIMS + 1):
            path = directory / (name if n == 1 else f"{stem}-{n}{dot}{ext}")
            if _take(tmp, path):
                return path
        raise FileExistsError(errno.EEXIST, f"{MAX_CLAIMS} files named like this already", str(directory / name))
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _take(tmp: Path, path: Path) -> bool:
    """Give tmp's content the name path if no file has it (True), else leave both alone (False)."""
    try:
        # A hard link fails when the name exists, and the file is whole from its first moment under it.
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    try:  # a file system without hard links: reserve the name empty, then replace it whole
        open(path, "xb").close()
    except FileExistsError:
        return False
    os.replace(tmp, path)
    return True


def why(path: Path, error: OSError) -> str:
    """Why path could not be written, in words: errno's, or that its folder is now a file."""
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file now, not a directory"
    return error.strerror or str(error)


def state_dir() -> Path:
    """Where results go when their folder cannot be written: $XDG_STATE_HOME or ~/.local/state, else the temp dir."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    try:
        return ensure_dir(base / "fwbench" / "results")
    except (ValueError, RuntimeError):  # RuntimeError: no home directory
        return ensure_dir(Path(tempfile.gettempdir()) / "fwbench-results")


def keep_elsewhere(name: str, data: bytes) -> Path:
    """data in a new file named like name under state_dir(), for results whose own folder failed."""
    return claim(state_dir(), name, data, option="the fallback folder")

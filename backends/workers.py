"""--workers for the data-parallel modes: how many a process was asked for, each one's threads, and its lifetime."""
from __future__ import annotations

import os
import socket
import threading
import time

from fwbench.backends.base import BackendError
from fwbench.backends.engine import parallel

ENV = "FWBENCH_WORKERS"                # set by --workers, inherited by every cell process
THREADS_ENV = "FWBENCH_WORKER_THREADS"  # set by the bench, equal in a cell and its 1-worker baseline
CPU_DEFAULT = 2                        # workers on a CPU when --workers is not given (on GPUs: every GPU)
TIMEOUT_ENV = "FWBENCH_DP_TIMEOUT_S"   # a collective or a worker's answer waited for longer than this fails


def env(workers: int, threads: int) -> dict[str, str]:
    """The environment that asks a process for `workers` workers of `threads` threads each."""
    return {ENV: str(workers), THREADS_ENV: str(threads)}


def requested(default: int) -> int:
    """--workers (FWBENCH_WORKERS), else `default`; BackendError for anything but a whole number of at least 1."""
    text = os.environ.get(ENV)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BackendError(f"--workers must be a whole number of at least 1, not '{text}'")
    return int(text)


def threads(workers: int) -> int:
    """Each worker's compute threads: FWBENCH_WORKER_THREADS, else the cores shared among the workers."""
    text = os.environ.get(THREADS_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else max(1, parallel.cores() // workers)


def timeout_s() -> float:
    """How long a worker may keep the others waiting: FWBENCH_DP_TIMEOUT_S, default 300 s."""
    return float(os.environ.get(TIMEOUT_ENV, "300"))


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch_parent(variable: str) -> None:
    """A worker fwbench started (its parent's pid in `variable`) leaves as soon as that parent is gone."""
    parent = int(os.environ.get(variable, "0"))
    if parent <= 0:
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()

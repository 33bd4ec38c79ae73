"""--workers for the data-parallel modes: how many a process was asked for, and each one's threads."""
from __future__ import annotations

import os

from fwbench.backends.base import BackendError
from fwbench.backends.engine import parallel

ENV = "FWBENCH_WORKERS"                # set by --workers, inherited by every cell process
THREADS_ENV = "FWBENCH_WORKER_THREADS"  # set by the bench, equal in a cell and its 1-worker baseline
CPU_DEFAULT = 2                        # workers on a CPU when --workers is not given (on GPUs: every GPU)


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

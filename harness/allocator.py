"""Keep glibc from handing freed memory back to the OS after every step."""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# By default glibc serves blocks over 128 KiB with mmap and trims the heap top past 128 KiB, so a
# training step that frees and reallocates tens of MB page-faults all of it back in, every step:
# measured here as 10 ms of a 17 ms NumPy cnn step. A long training run drifts out of that state by
# accident; a benchmark should not depend on the accident. 32 MiB is glibc's cap for the mmap threshold.
SETTINGS = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 512 * 2**20}


def tune() -> dict:
    """Apply SETTINGS to this process's allocator; returns what was set ({} where there is no glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return {}
    ok = all(mallopt(param, SETTINGS[key]) for key, param in
             (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD)))
    return dict(SETTINGS, allocator="glibc") if ok else {}

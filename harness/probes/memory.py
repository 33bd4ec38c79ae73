"""A process's own peak memory, which on Linux `ru_maxrss` cannot give (it survives exec from a large parent)."""
from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """VmHWM, the high-water mark of this process image's resident set, in MiB; ru_maxrss where /proc is absent."""
    # exec starts a new memory image and resets VmHWM, while ru_maxrss keeps the maximum of the image before
    # exec: a cell forked from a parent holding 800 MB would report the parent's 800 MB.
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""Where a result came from: the machine, the software and the commit."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def machine() -> dict:
    """What ran it: CPU, cores, OS and Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb(), "gpu": gpu(),
            "os": platform.platform(), "python": platform.python_version()}


def ram_gb() -> float | None:
    """Total memory in GiB, from /proc/meminfo where there is one."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def gpu() -> list[dict] | None:
    """Name, driver and memory of each NVIDIA GPU, asked of nvidia-smi; None without one."""
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    rows = [line.split(", ") for line in out.stdout.strip().splitlines()]
    return [{"name": r[0], "driver": r[1], "memory_mb": int(r[2])} for r in rows if len(r) == 3]


def git_commit() -> dict:
    """The commit of the working tree and whether it had uncommitted changes."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}

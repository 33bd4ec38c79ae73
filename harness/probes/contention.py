"""Whether other work shared the CPU while a cell ran: CPU used by other processes, steal, pressure, load."""
from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

# A run is contended when other processes used more than this share of the machine's CPU time during it,
# or when the hypervisor took more than STEAL_LIMIT of it. Set from measurements on the 2-core reference
# machine (docs/results.md): quiet runs read 0-1.5% others, runs beside two busy loops 40-60%; runs
# with 1-2% steal over their process were a median 1.2x slower than the cell's best run, 2-5% 1.4x.
OTHERS_LIMIT = 0.10
STEAL_LIMIT = 0.02
PROC = Path("/proc")


@dataclass(frozen=True)
class Snapshot:
    """Counters read at one instant; two of them give what happened in between."""
    wall: float
    busy: float | None       # seconds of non-idle CPU time, summed over every CPU
    steal: float | None      # seconds the hypervisor ran something else
    pressure_us: int | None  # /proc/pressure/cpu "some" total: microseconds some task waited for a CPU
    own_cpu: float           # CPU seconds of this process and its descendants, live or waited for


def _cpu_line(proc: Path) -> tuple[float, float] | tuple[None, None]:
    try:
        fields = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None, None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    busy = sum(fields[:8]) - idle - steal
    return busy / hz, steal / hz


def _pressure(proc: Path) -> int | None:
    try:
        for line in (proc / "pressure" / "cpu").read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _live_descendants_cpu(proc: Path) -> float:
    """CPU seconds of this process's live descendants (a data-parallel cell's workers): rusage counts a child only
    once it has been waited for."""
    hz, total, todo, seen = os.sysconf("SC_CLK_TCK"), 0.0, [os.getpid()], set()
    while todo:
        pid = todo.pop()
        try:
            kids = [int(k) for task in (proc / str(pid) / "task").iterdir()
                    for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # gone meanwhile, or a kernel without the children file: nothing more to count there
        for kid in set(kids) - seen:
            seen.add(kid)
            todo.append(kid)
            try:  # utime and stime, the 14th and 15th fields, counted after the ")" that ends the command name
                fields = (proc / str(kid) / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / hz
            except (OSError, ValueError, IndexError):
                pass
    return total


def snapshot(proc: Path = PROC) -> Snapshot:
    busy, steal = _cpu_line(proc)
    own = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return Snapshot(time.monotonic(), busy, steal, _pressure(proc), own + _live_descendants_cpu(proc))


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def between(before: Snapshot, after: Snapshot, cores: int | None = None) -> dict:
    """What other work did between two snapshots taken around a child process that has been waited for."""
    wall = max(after.wall - before.wall, 1e-9)
    capacity = wall * (cores or os.cpu_count() or 1)
    out: dict = {"seconds": round(wall, 3), "load_average": load_average()}
    if before.busy is not None and after.busy is not None:
        others = (after.busy - before.busy) - (after.own_cpu - before.own_cpu)
        out["others_cpu"] = round(max(0.0, others) / capacity, 4)
        out["steal"] = round(max(0.0, after.steal - before.steal) / capacity, 4)
    if before.pressure_us is not None and after.pressure_us is not None:
        out["cpu_pressure"] = round((after.pressure_us - before.pressure_us) / 1e6 / wall, 4)
    out["contended"] = out.get("others_cpu", 0) > OTHERS_LIMIT or out.get("steal", 0) > STEAL_LIMIT
    return out

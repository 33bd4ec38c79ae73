"""Machine readings: a cell's own memory, contention from other work, and the calibration."""
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fwbench.harness.probes import calibration, contention, memory

ROOT = Path(__file__).resolve().parent.parent


def test_a_child_of_a_large_parent_reports_its_own_peak_not_the_parents():
    held = np.ones(300 * 2**20 // 8)  # the parent holds 300 MiB, touched
    code = ("import resource; from fwbench.harness.probes.memory import peak_rss_mb; "
            "print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    own, maxrss = (float(v) for v in out.stdout.split())
    assert own < 100 and held.sum() > 0
    assert maxrss > 300  # what the cells used to report on Linux: ru_maxrss kept the parent's image across exec


def test_peak_falls_back_to_ru_maxrss_without_proc(tmp_path):
    assert memory.peak_rss_mb(tmp_path / "missing") > 1
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\n")
    assert memory.peak_rss_mb(status) == 200


def _fake_proc(tmp_path: Path, busy: int, steal: int, pressure: int) -> Path:
    (tmp_path / "pressure").mkdir(exist_ok=True)
    # user nice system idle iowait irq softirq steal: `busy` jiffies of work, 1000 idle
    (tmp_path / "stat").write_text(f"cpu  {busy} 0 0 1000 0 0 0 {steal} 0 0\n")
    (tmp_path / "pressure" / "cpu").write_text(f"some avg10=0.00 avg60=0.00 avg300=0.00 total={pressure}\n")
    return tmp_path


def test_other_processes_cpu_and_steal_mark_a_run_contended(tmp_path, monkeypatch):
    hz = contention.os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(contention.os, "cpu_count", lambda: 2)
    before = contention.snapshot(_fake_proc(tmp_path, 0, 0, 0))
    # one second later the machine did 1 s of work (others, since this process used none) and 0.5 s was stolen
    after = contention.snapshot(_fake_proc(tmp_path, hz, hz // 2, 400_000))
    after = contention.Snapshot(before.wall + 1, after.busy, after.steal, after.pressure_us, before.own_cpu)
    found = contention.between(before, after, cores=2)
    assert found["others_cpu"] == pytest.approx(0.5) and found["steal"] == pytest.approx(0.25)
    assert found["cpu_pressure"] == pytest.approx(0.4) and found["contended"]
    quiet = contention.between(before, contention.Snapshot(before.wall + 1, before.busy, before.steal, 0,
                                                           before.own_cpu), cores=2)
    assert quiet["others_cpu"] == 0 and not quiet["contended"]


BUSY = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"


def test_a_busy_loop_elsewhere_is_seen_as_contention():
    before = contention.snapshot()
    # Started by a shell that exits at once, so the loop is not this process's descendant: other work.
    subprocess.run(["sh", "-c", f'({shlex.quote(sys.executable)} -c {shlex.quote(BUSY)} &)'], check=True)
    time.sleep(1.0)
    found = contention.between(before, contention.snapshot())
    time.sleep(0.6)
    assert found["others_cpu"] > contention.OTHERS_LIMIT and found["contended"]


def test_a_live_child_is_this_process_own_work():
    # A data-parallel cell's workers run as its children, alive while it times its steps.
    before = contention.snapshot()
    loop = subprocess.Popen([sys.executable, "-c", BUSY])
    time.sleep(1.0)
    found = contention.between(before, contention.snapshot())
    loop.wait()
    assert found["others_cpu"] < contention.OTHERS_LIMIT, found
    # The hypervisor's steal is no process's: on a busy host it alone may still mark the second contended.
    assert found["contended"] == (found.get("steal", 0) > contention.STEAL_LIMIT), found


def test_calibration_measures_matmul_and_bandwidth():
    found = calibration.calibrate(repeats=3)
    assert found["matmul_gflops"] > 0.5 and found["bandwidth_gbs"] > 0.1 and found["matmul_n"] > 0

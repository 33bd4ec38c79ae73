"""The worker processes a data-parallel test starts: which are running, whether they have gone, what they said."""
import subprocess
import time


def running(module: str) -> list[int]:
    """Pids of `python -m module` processes now running (tests run one at a time, so they are this test's)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if f"-m {module}" in line]


def gone(pids, module: str, seconds: float = 15) -> bool:
    """Whether none of pids is a running `module` worker within `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not set(pids) & set(running(module)):
            return True
        time.sleep(0.2)
    return False


def lines_until(proc: subprocess.Popen, prefix: str, timeout: float) -> list[str]:
    """proc's stdout lines up to the first that starts with prefix; AssertionError, with its stderr, if none comes."""
    lines: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and not (lines and lines[-1].startswith(prefix)):
        lines.append(proc.stdout.readline().strip())
    assert lines and lines[-1].startswith(prefix), (lines, proc.stderr.read() if proc.poll() is not None else "")
    return lines

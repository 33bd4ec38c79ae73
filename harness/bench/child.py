"""The bench's child processes: a time limit each, their own process group, and never outliving the bench."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

PARENT_ENV = "FWBENCH_PARENT_PID"  # set for a child, so it can die with the process that started it
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool

    def last_line(self, stream: str = "stderr") -> str:
        return (getattr(self, stream).strip().splitlines() or [""])[-1]


def run(cmd: list[str], timeout_s: float, stdout: bool = True, env: dict[str, str] | None = None) -> Finished:
    """Run cmd in its own process group with a time limit; on timeout or interrupt the whole group is killed."""
    # Its own session: Ctrl-C at a terminal reaches the bench alone, which then stops the whole group, grandchildren
    # included, and waits for it before cleaning up what the child used.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())})
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return Finished(proc.returncode, out or "", err or "", False)
    except subprocess.TimeoutExpired:
        out, err = stop(proc)
        return Finished(proc.returncode, out, err, True)
    except BaseException:  # KeyboardInterrupt, or SIGTERM turned into one: the child goes with us
        kill_group(proc)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        raise


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already gone
        pass


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """Kill the child's process group, reap it, and return what it had written."""
    kill_group(proc)
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild that left the group holds the pipes: stop reading
        proc.kill()
        proc.wait()
        out, err = "", ""
    return out or "", err or ""


def timed_out(what: str, seconds: float) -> str:
    return f"{what} timed out after {seconds:g} s"


def die_with_parent() -> None:
    """In a child the bench started: be killed when the bench dies, even by SIGKILL, which it cannot pass on."""
    parent = os.environ.pop(PARENT_ENV, None)  # popped: this process's own children are not the bench's
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch, args=(int(parent),), daemon=True).start()
    if os.getppid() != int(parent):  # the bench died before prctl: no signal will come
        _gone(int(parent))


def _gone(parent: int) -> None:
    print(f"fwbench: the bench that started this process (pid {parent}) is gone; stopping", file=sys.stderr)
    os._exit(1)


def _watch(parent: int) -> None:
    """Where the kernel cannot signal a parent's death: look once a second."""
    while os.getppid() == parent:
        time.sleep(1)
    _gone(parent)

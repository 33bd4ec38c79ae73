"""A worker process for the engine's sliced work: the same NumPy calls as a thread, without sharing the GIL."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

from fwbench.backends.engine import shared

SPIN_SECONDS = 0.005
link: Connection | None = None  # in a worker process, its connection to the parent: a replica's step talks over it


class Worker:
    """One process that runs jobs, fn(worker, items) pickled with the arena's arrays by reference, one at a time."""

    def __init__(self, arena: shared.Arena):
        self.arena = arena
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # One BLAS thread, as the threads' BLAS is held to: the second core is this process's.
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        code = "import sys; from fwbench.backends.engine import remote; remote.serve(*map(int, sys.argv[1:]))"
        # -P: the working directory is not put first on the path (python -c would), so the process imports the
        # parent's fwbench, not one that happens to lie where it was started.
        self.process = subprocess.Popen([sys.executable, "-P", "-c", code, str(theirs.fileno()), str(os.getpid())],
                                        pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.connection = Connection(ours.detach())
        self.busy = False

    def submit(self, fn, *args) -> None:
        """Start fn(*args) in the worker; result() waits for it."""
        self.connection.send_bytes(shared.dumps((fn, args), self.arena))
        self.busy = True

    def result(self, timeout: float | None = None):
        """What the job submitted last returned; its exception, as a RuntimeError with the worker's traceback.

        timeout: seconds to wait at most (a RuntimeError after them, the process killed); None: as long as it takes."""
        self.busy = False
        if timeout is not None and not self.connection.poll(timeout):
            self.process.kill()
            raise RuntimeError(f"the engine's worker process did not answer within {timeout:g} s")
        # Polled for a while before blocking: the caller has nothing else to do, and a sleeping process woken by the
        # reply took 50-130 us more here.
        wait(self.connection)
        try:
            status, value = pickle.loads(self.connection.recv_bytes())
            while status == "peer":  # a replica's exchange left unread by a step that failed (replica.Link.abort)
                status, value = pickle.loads(self.connection.recv_bytes())
        except EOFError:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(f"the engine's worker process died (exit status {code})") from None
        if status == "error":
            raise RuntimeError(f"in the engine's worker process:\n{value}")
        return value

    def peak_rss_mb(self) -> float | None:
        """Its process's high-water mark (VmHWM) less the shared memory it maps (RssShmem), which the parent counts."""
        try:
            fields = dict(line.split(":", 1) for line in open(f"/proc/{self.process.pid}/status"))
            return (int(fields["VmHWM"].split()[0]) - int(fields["RssShmem"].split()[0])) / 1024
        except (OSError, KeyError, ValueError):
            return None

    def close(self) -> None:
        """Stop the process: its socket closed, it exits."""
        if self.busy:
            try:
                self.result()
            except RuntimeError:
                pass
        self.connection.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def serve(fd: int, parent: int) -> None:
    """The worker process's loop: a job in, its result or its traceback out, until the parent closes the socket."""
    import signal
    import traceback

    from fwbench.harness import allocator
    # Ctrl-C reaches the whole process group: the parent stops, closes the socket, and this process ends on that,
    # quietly, rather than with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Its scratch is allocated and freed every job: kept by malloc, not unmapped and faulted back in each time (vgg's
    # conv backward passes took 1.8x as long untuned).
    allocator.tune()
    global link
    from fwbench.backends.engine.replica import ABORT
    connection, mapper = Connection(fd), shared.Mapper(parent)
    link = connection
    polling = False
    while True:
        if polling:
            wait(connection)
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):
            return
        if message == ABORT:  # for a replica's step that had already ended here
            continue
        try:
            fn, args = mapper.loads(message)
            if fn == "peer":  # an exchange of a replica's step that had already failed here
                continue
            # Only after a job that says its next comes at once: a spin after any other would take the core from
            # the parent's BLAS threads (dmlp's GEMMs, after its update's share).
            polling = getattr(fn, "poll_after", False)
            reply = ("ok", fn(*args))
        except BaseException:  # noqa: B902 - every failure goes back to the parent, which raises it
            reply = ("error", traceback.format_exc())
        try:
            connection.send_bytes(shared.dumps(reply, None))
        except OSError:  # the parent is gone (killed, interrupted): nothing to report to, and no traceback
            return


def wait(connection: Connection) -> None:
    """Poll for the next message for SPIN_SECONDS, rather than sleep in recv at once (woken 50-170 us late here)."""
    # A replica of a split step (numpy_split.py) gets its next job a fraction of a millisecond after its last: asleep
    # in recv, it was woken 20-40 us later than this and ran its first ops cold. Steps in fresh processes against
    # blocking at once (with numpy_split.descend), 4 alternating rounds: vgg 0.96x, lenet5 0.97x, wide7 0.98x,
    # tgmnist 0.98x, strided 0.99x. Before descend, pyex and flaxex read 1.03x and 1.05x: the spin took the core
    # that their Adam's second thread then ran on.
    deadline = time.perf_counter() + SPIN_SECONDS
    while not connection.poll(0) and time.perf_counter() < deadline:
        pass

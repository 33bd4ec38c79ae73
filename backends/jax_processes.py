"""The worker processes behind flax@dp: JAX processes joined by jax.distributed, driven from the harness's process.

JAX fixes its distributed set-up before it first runs, and the harness's process may already have run JAX (plain
flax beside flax@dp), so it does not join: it starts the workers, sends each call to all of them over a local
socket, and reads their answers. The collectives between workers are JAX's own (gloo on the CPU)."""
from __future__ import annotations

import atexit
import os
import pickle
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import Any, Callable

from fwbench.backends import workers
from fwbench.backends.base import BackendError

PARENT = "FWBENCH_JAX_CHILD"  # in a worker: the harness's pid; the other variables say how to join
DRIVER, KEY = "FWBENCH_JAX_DRIVER", "FWBENCH_JAX_KEY"              # the harness's socket and its key
PROCESS, PROCESSES = "FWBENCH_JAX_PROCESS", "FWBENCH_JAX_PROCESSES"  # this worker's process id, and how many
COORDINATOR, CPUS, DEVICE = "FWBENCH_JAX_COORDINATOR", "FWBENCH_JAX_CPUS", "FWBENCH_JAX_DEVICE"


class Processes:
    """The harness's side: `count` worker processes, each answering every command over its own connection."""

    def __init__(self, count: int, device: str, module: str):
        self.count, self.dropped = count, []
        self.broken: str | None = None
        key = secrets.token_bytes(16)
        self.listener = Listener(("127.0.0.1", 0), authkey=key)
        # A worker's output (gloo prints to stdout, which may be the harness's JSON), quoted if the worker fails.
        self.logs = [tempfile.TemporaryFile() for _ in range(count)]
        env = dict(os.environ, **{PARENT: str(os.getpid()), DRIVER: "%s:%d" % self.listener.address, KEY: key.hex(),
                                  PROCESSES: str(count), COORDINATOR: f"127.0.0.1:{workers.free_port()}",
                                  DEVICE: device, workers.ENV: str(count)})
        self.children = [subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT,
                                          env=dict(env, **{PROCESS: str(i), CPUS: cpus}))
                         for i, (log, cpus) in enumerate(zip(self.logs, _cpu_sets(count, device)))]
        atexit.register(self.close)
        self.conns = self._accept()

    def _accept(self) -> list[Connection]:
        """Every worker's connection, in process order, once each has joined the others."""
        conns: dict[int, Connection] = {}

        def accept():
            try:
                for _ in range(self.count):
                    conn = self.listener.accept()
                    conns[conn.recv()] = conn
            except OSError:  # the listener closed: a worker failed, and _check says which
                pass
        waiter = threading.Thread(target=accept, daemon=True)
        waiter.start()
        deadline = time.monotonic() + workers.timeout_s()
        while waiter.is_alive():
            waiter.join(0.2)
            self._check(deadline, "to start")
        return [conns[i] for i in range(self.count)]

    def _check(self, deadline: float, what: str) -> None:
        """BackendError, every worker stopped, if one has exited or the deadline has passed."""
        dead = next((i for i, c in enumerate(self.children) if c.poll() is not None), None)
        if dead is not None:
            self._dead(dead)
        if time.monotonic() > deadline:
            self._fail(f"the workers took more than {workers.timeout_s():g} s {what} "
                       f"(set {workers.TIMEOUT_ENV} for longer)")

    def _dead(self, i: int):
        """BackendError for worker i, gone or going: its exit code and its last words."""
        try:
            code = self.children[i].wait(5)
        except subprocess.TimeoutExpired:
            code = "unknown: it closed its connection but still runs"
        self._fail(f"worker {i} exited with code {code} ({self._last_line(i)})")

    def _last_line(self, i: int) -> str:
        log = self.logs[i]
        log.seek(0)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"

    def _fail(self, why: str):
        self.broken = f"flax@dp: {why}"
        self.close()
        raise BackendError(self.broken)

    def gather(self, command: str, *args) -> list[Any]:
        """Every worker runs HANDLERS[command](*args); their answers. A worker's error is raised here."""
        if self.broken:
            raise BackendError(f"{self.broken}; start a new process to run flax@dp again")
        payload = pickle.dumps((command, args), protocol=pickle.HIGHEST_PROTOCOL)  # pickled once, for every worker
        for i, conn in enumerate(self.conns):
            try:
                conn.send_bytes(payload)
            except OSError:
                self._dead(i)
        answers: dict[int, tuple[bool, Any]] = {}
        # A long command is no fault while every worker lives, but once one has answered, the rest must follow
        # soon: a worker that skipped a collective has left the others waiting in it.
        deadline = float("inf")
        while len(answers) < self.count:
            for conn in wait([c for i, c in enumerate(self.conns) if i not in answers], timeout=0.5):
                i = self.conns.index(conn)
                try:
                    answers[i] = conn.recv()
                except (EOFError, OSError):
                    self._dead(i)
                deadline = min(deadline, time.monotonic() + workers.timeout_s())
            if len(answers) < self.count:
                self._check(deadline, f"to answer '{command}' after worker {min(answers, default=0)} did")
        for i in range(self.count):
            ok, value = answers[i]
            if not ok:
                raise value  # the first worker's error; the others ran the same call on the same input
        return [answers[i][1] for i in range(self.count)]

    def run(self, command: str, *args) -> Any:
        """Every worker runs HANDLERS[command](*args); the first worker's answer."""
        return self.gather(command, *args)[0]

    def close(self) -> None:
        """Tell the workers to leave, and wait for them (a few seconds, then kill)."""
        for conn in getattr(self, "conns", []):
            try:
                conn.send_bytes(pickle.dumps(("close", ())))
            except OSError:
                pass
        self.listener.close()
        deadline = time.monotonic() + (1 if self.broken else 10)  # a broken group's workers may never leave
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _cpu_sets(count: int, device: str) -> list[str]:
    """Each CPU worker's cores, disjoint while they last: XLA sizes its thread pool to the cores it may run on."""
    if device != "cpu":
        return [""] * count
    cores, threads = sorted(os.sched_getaffinity(0)), workers.threads(count)
    return [",".join(str(cores[(i * threads + j) % len(cores)]) for j in range(threads)) for i in range(count)]


def serve(handlers: dict[str, Callable[..., Any]]) -> None:
    """A worker: join the other JAX processes, then run the harness's commands until it closes or goes."""
    workers.watch_parent(PARENT)
    env = os.environ
    if env.get(CPUS):
        os.sched_setaffinity(0, {int(c) for c in env[CPUS].split(",")})
    import jax  # after the affinity, which sizes XLA's CPU thread pool
    count, process = int(env[PROCESSES]), int(env[PROCESS])
    if count > 1:
        if env[DEVICE] == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(env[COORDINATOR], count, process, initialization_timeout=int(workers.timeout_s()))
    host, port = env[DRIVER].rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(env[KEY]))
    conn.send(process)
    while True:
        try:
            command, args = pickle.loads(conn.recv_bytes())
        except EOFError:
            os._exit(0)
        if command == "close":
            os._exit(0)  # every worker is told at once; none waits on the others any more
        try:
            conn.send((True, handlers[command](*args)))
        except Exception as e:  # noqa: BLE001 - the harness raises it, as if the call had run in its process
            try:
                conn.send((False, e))
            except Exception:  # noqa: BLE001 - an error that does not pickle goes as its text
                conn.send((False, RuntimeError(f"{type(e).__name__}: {e}")))

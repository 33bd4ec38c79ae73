"""A training step split by images over the worker processes: the links through which the replicas meet mid-step."""
from __future__ import annotations

import pickle

import numpy as np

from fwbench.backends.engine import remote

# What the first replica sends the others when its own part failed: each stops where it waits, and reports.
ABORT = b"fwbench-abort"
# A replica that has waited this long for another's part gives up with an error rather than hang: no layer of a
# spec's step takes near it here.
STALL_SECONDS = 600.0


class Aborted(RuntimeError):
    """The first replica's part of the step failed; this one stops where it waited for it."""


def bounds(n: int, replicas: int) -> list[slice]:
    """The images of each replica, in order: as even as can be, the first ones the larger."""
    size, longer = divmod(n, replicas)
    edges = [r * size + min(r, longer) for r in range(replicas + 1)]
    return [slice(lo, hi) for lo, hi in zip(edges, edges[1:])]


class Link:
    """One replica's end of the step's exchanges: sums over every replica's images, and the first one's scatter.

    The first replica (rank 0, the caller's process) talks to every other over its worker's socket; the others talk
    only to it. Every replica adds the parts of a sum in rank order itself, so every one holds the same bits."""

    def __init__(self, rank: int, parts: list[slice], connection=None, workers: list | None = None):
        """Rank 0 holds the others' remote.Workers; each other rank the connection to rank 0."""
        self.rank, self.parts, self.workers = rank, parts, workers or []
        self.connections = [w.connection for w in self.workers] if rank == 0 else [connection]
        self.images = parts[-1].stop  # the whole batch's

    def sum(self, a: np.ndarray) -> np.ndarray:
        """a summed over the replicas, in rank order; the same array on every one."""
        # Every replica sends its part at once and adds every part itself, in rank order (the same bits everywhere):
        # no replica waits for another's sum, only for the parts. Rank 0 passes the workers' parts on where there
        # are more than two replicas.
        if self.rank:
            self._send(self.connections[0], a)
            parts = [self._receive(0)]
            if len(self.parts) > 2:
                parts = [*parts, *self._receive(0)]
            else:
                parts.append(a)
        else:
            for connection in self.connections:
                self._send(connection, a)
            others = [self._receive(i) for i in range(len(self.connections))]
            if len(others) > 1:
                for connection in self.connections:
                    self._send(connection, others)
            parts = [a, *others]
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        return total

    def meet(self) -> None:
        """Return once every replica has reached this point."""
        self.sum(np.zeros(1, np.int8))

    def scatter(self, whole: np.ndarray | None) -> np.ndarray:
        """This replica's images of the first replica's whole-batch array (what the others pass is ignored)."""
        if self.rank:
            return self._receive(0)
        for connection, part in zip(self.connections, self.parts[1:]):
            self._send(connection, whole[part])
        return whole[self.parts[0]]

    def abort(self) -> None:
        """Rank 0, its own part failed: tell the others to stop, and wait for them (their errors are its own's)."""
        for worker in self.workers:
            try:
                worker.connection.send_bytes(ABORT)
            except OSError:  # a worker already gone: its result says so
                pass
        for worker in self.workers:
            if worker.busy:
                try:
                    worker.result(timeout=STALL_SECONDS)  # a worker that never answers is killed, not waited for
                except RuntimeError:
                    pass

    @staticmethod
    def _send(connection, a: np.ndarray) -> None:
        connection.send_bytes(pickle.dumps(("peer", a), protocol=pickle.HIGHEST_PROTOCOL))

    def _receive(self, i: int) -> np.ndarray:
        connection = self.connections[i]
        # Polled for a while before blocking, as remote.Worker.result polls: the other replica is most often a few
        # microseconds away.
        remote.wait(connection)
        try:
            if not connection.poll(STALL_SECONDS):
                if self.rank:
                    raise Aborted(f"the first replica sent nothing for {STALL_SECONDS:g} s")
                raise RuntimeError(f"the engine's worker process sent nothing for {STALL_SECONDS:g} s")
            message = connection.recv_bytes()
        except (EOFError, OSError):
            if self.rank:
                raise Aborted("the first replica is gone") from None
            raise RuntimeError("the engine's worker process died") from None
        if message == ABORT:
            raise Aborted("the first replica's part of the step failed")
        status, value = pickle.loads(message)
        if status == "peer":
            return value
        # A worker's reply where its exchange was due: its part failed (its traceback), or it ended early. That was
        # its job's reply: there is no other to wait for.
        self.workers[i].busy = False
        raise RuntimeError(f"in the engine's worker process:\n{value}" if status == "error" else
                           "the engine's worker process ended its part of the step early")

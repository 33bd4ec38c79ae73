"""A training step split by images over the worker processes: the links through which the replicas meet mid-step."""
from __future__ import annotations

import math
import pickle
import time

import numpy as np

from fwbench.backends.engine import mailbox, remote

# What the first replica sends the others when its own part failed: each stops where it waits, and reports.
ABORT = b"fwbench-abort"
# A replica that has waited this long for another's part gives up with an error rather than hang: no layer of a
# spec's step takes near it here.
STALL_SECONDS = 600.0
# How long a replica waiting for its box blocks on its socket at a time, once it has spun for remote.SPIN_SECONDS.
LONG_POLL_SECONDS = 0.0005


class Aborted(RuntimeError):
    """The first replica's part of the step failed; this one stops where it waited for it."""


def bounds(n: int, replicas: int) -> list[slice]:
    """The images of each replica, in order: as even as can be, the first ones the larger."""
    size, longer = divmod(n, replicas)
    edges = [r * size + min(r, longer) for r in range(replicas + 1)]
    return [slice(lo, hi) for lo, hi in zip(edges, edges[1:])]


class Link:
    """One replica's end of the step's exchanges: sums over every replica's images, and the first one's scatter.

    The first replica (rank 0, the caller's process) talks to every other over its worker's socket, and through
    mailboxes in shared memory where it has them; the others talk only to it. Every replica adds the parts of a sum
    in rank order itself, so every one holds the same bits."""

    def __init__(self, rank: int, parts: list[slice], connection=None, workers: list | None = None,
                 boxes: list | None = None):
        """Rank 0 holds the others' remote.Workers; each other rank the connection to rank 0.

        boxes: mailbox.Boxes in shared memory, (to the worker, from it) for each worker at rank 0, the one pair at
        the others: the small sums go through them instead of the sockets."""
        self.rank, self.parts, self.workers = rank, parts, workers or []
        self.connections = [w.connection for w in self.workers] if rank == 0 else [connection]
        self.boxes = boxes
        self.images = parts[-1].stop  # the whole batch's

    def sum(self, a: np.ndarray) -> np.ndarray:
        """a summed over the replicas, in rank order; the same array on every one."""
        # Every replica sends its part at once and adds every part itself, in rank order (the same bits everywhere):
        # no replica waits for another's sum, only for the parts. Rank 0 passes the workers' parts on where there
        # are more than two replicas.
        others = (len(self.parts) - 1, *a.shape)  # the shape of the parts rank 0 passes on
        boxed = self.boxes is not None and a.dtype == np.float64 and math.prod(others) <= mailbox.CAPACITY
        if self.rank:
            self._send(0, a, boxed)
            parts = [self._receive(0, a.shape, boxed)]
            if len(self.parts) > 2:
                parts = [*parts, *self._receive(0, others, boxed)]
            else:
                parts.append(a)
        else:
            for i in range(len(self.connections)):
                self._send(i, a, boxed)
            parts = [a, *(self._receive(i, a.shape, boxed) for i in range(len(self.connections)))]
            if len(parts) > 2:
                relayed = np.stack(parts[1:])
                for i in range(len(self.connections)):
                    self._send(i, relayed, boxed)
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        return total

    def meet(self) -> None:
        """Return once every replica has reached this point."""
        self.sum(np.zeros(1))

    def scatter(self, whole: np.ndarray | None) -> np.ndarray:
        """This replica's images of the first replica's whole-batch array (what the others pass is ignored)."""
        if self.rank:
            return self._receive(0)
        for i, part in enumerate(self.parts[1:]):
            self._send(i, whole[part])
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

    def _send(self, i: int, a: np.ndarray, boxed: bool = False) -> None:
        """a to the replica at connection i: through its box, else over the socket."""
        if boxed:
            self.boxes[i][0 if self.rank == 0 else 1].put(a)
        else:
            self.connections[i].send_bytes(pickle.dumps(("peer", a), protocol=pickle.HIGHEST_PROTOCOL))

    def _receive(self, i: int, shape: tuple[int, ...] = (), boxed: bool = False) -> np.ndarray:
        """The next part from the replica at connection i (of this shape, through its box if boxed)."""
        connection = self.connections[i]
        if not boxed:
            # Polled for a while before blocking, as remote.Worker.result polls: the other replica is most often a
            # few microseconds away.
            remote.wait(connection)
            if not connection.poll(STALL_SECONDS):
                self._stalled()
            return self._read(i, expected=True)
        box, start, checks = self.boxes[i][1 if self.rank == 0 else 0], time.perf_counter(), 0
        while not box.ready():
            # The socket is looked at too, every so often: an abort or a failed worker's reply comes that way. Past
            # remote.SPIN_SECONDS it is waited on for a while each time, so that a long wait does not spin.
            checks += 1
            if checks % 64 == 0:
                waited = time.perf_counter() - start
                if connection.poll(0 if waited < remote.SPIN_SECONDS else LONG_POLL_SECONDS):
                    # A part that comes later (a scatter's) follows this one, sent after it: with the box still
                    # empty, the socket holds an abort or a failed worker's reply.
                    if box.ready():
                        break
                    self._read(i, expected=False)
                elif waited > STALL_SECONDS:
                    self._stalled()
        return box.take(shape)

    def _stalled(self) -> None:
        if self.rank:
            raise Aborted(f"the first replica sent nothing for {STALL_SECONDS:g} s")
        raise RuntimeError(f"the engine's worker process sent nothing for {STALL_SECONDS:g} s")

    def _read(self, i: int, expected: bool) -> np.ndarray:
        """The message waiting at connection i, a part if expected; anything else raises (an abort, a reply)."""
        try:
            message = self.connections[i].recv_bytes()
        except (EOFError, OSError):
            if self.rank:
                raise Aborted("the first replica is gone") from None
            raise RuntimeError("the engine's worker process died") from None
        if message == ABORT:
            raise Aborted("the first replica's part of the step failed")
        status, value = pickle.loads(message)
        if status == "peer":
            if expected:
                return value
            raise RuntimeError("a replica's exchange came over its socket where its box was due")  # a bug
        # A worker's reply where its exchange was due: its part failed (its traceback), or it ended early. That was
        # its job's reply: there is no other to wait for.
        self.workers[i].busy = False
        raise RuntimeError(f"in the engine's worker process:\n{value}" if status == "error" else
                           "the engine's worker process ended its part of the step early")

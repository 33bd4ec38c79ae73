"""The numpy backend's training step split by images over the engine's worker processes, one replica in each."""
from __future__ import annotations

import itertools

import numpy as np

from fwbench.backends.engine import mailbox, optim, parallel, replica
from fwbench.models import flops

# A step is split where its convs' work, forward and backward over the batch, is at least this many FLOPs. Below it,
# the engine's ops share their own work: the GEMMs of a spec without convs, on BLAS's threads, scale better than its
# halves do (mlp's step 1.42x as long split, dmlp's 1.22x), and a tiny conv's step gains nothing (tinycnn 1.02x, 2.1 M).
# cnn, whose convs are 53 M, 0.75x. Measured with benchmarks/engine_workers.py (3 alternating rounds).
SPLIT_FLOPS = 16_000_000
# The replicas share the optimizer's step (descend()) from this many parameters; below, the first replica runs it
# over all of them, as Adam shares its passes over the threads only from optim.SHARE_FROM. Steps in fresh processes
# against the first replica's Adam on the threads, 4 alternating rounds: pyex (1.2 M parameters) 0.95x, flaxex
# (824K) 0.94x. Shared at every size, lenet5 (62K), vgg (117K) and strided (25K) read 1.02x, 1.00x and 1.04x meeting
# over the socket, 1.02x, 1.00x and 1.02x through the mailboxes: the meeting and its wait cost more than half a small
# update saves.
DESCEND_FROM = optim.SHARE_FROM
_keys = itertools.count(1)
_held: dict = {}  # in a worker process: the one replica it holds, under its key


def applies(backend, images: int) -> bool:
    """Whether this backend's step over this many images is split: NumPy itself, its convs' work, and workers."""
    # Only the numpy backend itself: the worker builds a replica of it, which a subclass's overrides (a test's wrong
    # backend, a plugin) would not be.
    from fwbench.backends.numpy_backend import NumpyBackend
    return type(backend) is NumpyBackend and backend.xp is np and images > 1 and bool(parallel.replicas()) and \
        backend.replicas.worth(backend.spec, images)


class Replicas:
    """A backend's replicas: its parameters in shared memory, each worker's gradient array, and their key."""

    def __init__(self):
        self.key, self.grads, self.boxes, self.conv_flops = None, [], [], None

    def worth(self, spec, images: int) -> bool:
        """Whether the convs' work over this many images reaches SPLIT_FLOPS."""
        if self.conv_flops is None:  # per image, counted once
            try:
                self.conv_flops = sum(c.forward + c.backward for c in flops.layer_flops(spec, 1)
                                      if c.type == "conv2d")
            except ValueError:  # a layer with no FLOP rule yet: its step runs unsplit rather than fail
                self.conv_flops = 0
        return self.conv_flops * images >= SPLIT_FLOPS

    def step(self, backend, x: np.ndarray, y: np.ndarray, update: bool, optimizer=None):
        """Forward and backward over x, each worker its share of the images: the loss; the gradients' sum in flat_grad.

        The first replica (this process) draws dropout's masks and updates batch norm's running statistics.
        optimizer: its step too, each replica over its segment of the parameters (descend())."""
        from fwbench.backends.numpy_backend import Pass
        workers = parallel.replicas()[:len(x) - 1]
        # Only where the update is large enough that halving it saves more than the replicas' meeting costs.
        descending = optimizer is not None and backend.flat.size >= DESCEND_FROM
        self._place(backend, len(workers), optimizer if descending else None)
        parts = replica.bounds(len(x), len(workers) + 1)
        x, y = parallel.shareable(x), parallel.shareable(y)
        grads = [backend.flat_grad, *self.grads[:len(workers)]]  # in rank order
        descent = (optimizer, grads) if descending else None
        boxes = self.boxes[:len(workers)] if mailbox.ORDERED else None
        for rank, worker in enumerate(workers, 1):
            # A worker holds one replica: this one's is built again where another backend's took its place.
            held = getattr(worker, "replica", None) == self.key
            state = None if held else (backend.spec, backend.dtype.name, backend.flat, self.grads[rank - 1])
            if boxes:
                for box in boxes[rank - 1]:
                    box.clear()  # what a failed step left there: every worker is idle between steps
            worker.submit(part, self.key, state, rank, parts, x, y, descent, boxes and boxes[rank - 1])
            worker.replica = self.key
        link = replica.Link(0, parts, workers=workers, boxes=boxes)
        try:
            with parallel.alone():
                loss = backend.share(x[parts[0]], y[parts[0]], Pass(True, backend.buffers, update, backend.masks,
                                                                   backend.rng, link)).data
                if descent is not None:
                    descend(link, *descent)
        except BaseException:
            link.abort()
            _forget(workers)
            raise
        losses = [_result(worker) for worker in workers]
        for other in losses:
            if isinstance(other, BaseException):
                _forget(workers)
                raise other
        for other in losses:
            loss = loss + other
        if descent is None:  # in rank order: the same sum every step, and descend()'s
            for grad in grads[1:]:
                backend.flat_grad += grad
            if optimizer is not None:
                optimizer.step([backend.flat_grad])
        return loss[()]

    def _place(self, backend, count: int, optimizer) -> None:
        """The parameters, gradients and optimizer state in shared memory, and `count` replicas' gradient arrays, where
        they are not."""
        if optimizer is not None and not all(parallel.placed(a) for a in optimizer.state()):
            optimizer.place(parallel.empty)  # sent to the workers with every step: no replica to build again
        if self.key is not None and len(self.grads) >= count and all(
                parallel.placed(a) for a in (backend.flat, backend.flat_grad, *self.grads)):
            return
        flat = parallel.empty(backend.flat.shape, backend.dtype)
        flat[...] = backend.flat
        backend.bind(flat, parallel.empty(flat.shape, backend.dtype))
        self.grads = [parallel.empty(flat.shape, backend.dtype) for _ in range(count)]
        # To each worker and from it: its small exchanges with the first replica (replica.Link).
        self.boxes = [(mailbox.Box(parallel.empty), mailbox.Box(parallel.empty)) for _ in range(count)]
        self.key = next(_keys)  # the workers' replicas of the old arrays are stale


def share_update(backend, optimizer) -> None:
    """For an unsplit step: where the update is large and there are worker processes, the parameters, gradients and
    optimizer state in shared memory, so that its passes run there too (optim.Adam.apply)."""
    if parallel.processes() and backend.xp is np and backend.flat.size >= DESCEND_FROM:
        backend.replicas._place(backend, 0, optimizer)


def descend(link: replica.Link, optimizer, grads: list[np.ndarray]) -> None:
    """Replica link.rank's segment of the update: every replica's gradients summed there (in rank order, into the
    first's), then the optimizer's step over it, once every replica has written its gradients."""
    # Each replica updates its own segment: the sum and the optimizer's passes are shared without a thread, and the
    # parameters are whole again when every replica has answered.
    link.meet()
    mine = replica.bounds(grads[0].size, len(link.parts))[link.rank]
    total = grads[0][mine]
    for other in grads[1:]:
        total += other[mine]
    optimizer.begin()
    optimizer.apply([grads[0]], mine)


def _forget(workers: list) -> None:
    """After a failed step: each worker's replica is built again at the next (its construction may have failed)."""
    for worker in workers:
        worker.replica = None


def _result(worker):
    try:
        return worker.result()
    except RuntimeError as e:
        return e


def part(key: int, state, rank: int, parts: list[slice], x: np.ndarray, y: np.ndarray, descent=None, boxes=None):
    """In a worker process: replica `rank`'s share of the step, its gradients into its array; returns its loss.

    descent: (the optimizer, every replica's gradient array), for its segment of the update (descend()).
    boxes: its mailboxes with the first replica (to it, from it), or None: the socket."""
    from fwbench.backends.engine import remote
    from fwbench.backends.numpy_backend import NumpyBackend, Pass
    if state is not None:
        spec, dtype, flat, grad = state
        held = NumpyBackend(spec, dtype=dtype)
        held.bind(flat, grad)
        _held.clear()
        _held[key] = held
    backend = _held[key]
    link = replica.Link(rank, parts, connection=remote.link, boxes=boxes and [boxes])
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run: the first replica's loss reports it
        loss = backend.share(x[parts[rank]], y[parts[rank]], Pass(True, backend.buffers, link=link)).data
        if descent is not None:
            descend(link, *descent)
    return loss


part.poll_after = True  # the worker polls for the next step's share (remote.wait)

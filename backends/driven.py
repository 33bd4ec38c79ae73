"""A data-parallel mode as the harness sees it: each protocol call sent to every worker's replica of the model."""
from __future__ import annotations

import itertools
import weakref
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np

from fwbench.backends.base import Backend, BackendError, OptimizerConfig
from fwbench.models.params import Params

_KEYS = itertools.count()  # one per driven instance, unique across groups


class Group(Protocol):
    """The workers' command channel (ddp_group.Group, jax_processes.Processes)."""

    dropped: list[int]  # keys of instances collected on the harness's side, dropped everywhere with the next command

    def run(self, command: str, *args) -> Any:
        """Every worker runs HANDLERS[command](*args); the first worker's answer."""

    def gather(self, command: str, *args) -> list[Any]:
        """Every worker runs HANDLERS[command](*args); every worker's answer, the first worker's first."""


class Here:
    """A group of one worker: this process, running each command's handler directly."""

    def __init__(self, handlers: dict[str, Any]):
        self.handlers, self.dropped = handlers, []

    def run(self, command: str, *args) -> Any:
        """This process runs handlers[command](*args); its answer."""
        return self.handlers[command](*args)

    def gather(self, command: str, *args) -> list[Any]:
        """This process's answer, as the only worker's."""
        return [self.run(command, *args)]


class Epoch:
    """A prepared epoch: its key on every worker, and its steps."""

    def __init__(self, key: int, steps: int):
        self.key, self.steps = key, steps


class Driven(Backend):
    """The harness's side of N replicas: every call goes to each worker's replica under this instance's key."""

    fused = True  # timed over runs of steps, one command to every worker each
    data_parallel = True
    local: ClassVar[type[Backend]]  # the single-process backend each replica runs: its version, devices, numerics

    def _attach(self, group: Group) -> None:
        """Key this instance on `group`; its replicas are dropped once it is collected."""
        self.group, self.key = group, next(_KEYS)
        weakref.finalize(self, group.dropped.append, self.key)
        self._epochs = itertools.count()

    def _flush(self) -> None:
        if self.group.dropped:
            keys = self.group.dropped[:]
            self.group.dropped.clear()
            self.group.run("drop", keys)

    def _run(self, command: str, *args) -> Any:
        self._flush()
        return self.group.run(command, self.key, *args)

    def _gather(self, command: str, *args) -> list[Any]:
        self._flush()
        return self.group.gather(command, self.key, *args)

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """The single-process backend's settings, pinned here and by every worker."""
        return cls.local.pin_numerics()

    @classmethod
    def version(cls) -> str:
        """The single-process backend's versions."""
        return cls.local.version()

    @classmethod
    def devices(cls) -> list[str]:
        """The single-process backend's devices."""
        return cls.local.devices()

    def set_params(self, params: Params) -> None:
        """Every worker's parameters replaced."""
        self._run("set_params", params)

    def set_buffers(self, buffers: Params) -> None:
        """Every worker's running statistics replaced."""
        self._run("set_buffers", buffers)

    def set_masks(self, masks: Params | None) -> None:
        """The global batch's keep-masks; each worker applies its slice's rows."""
        self._run("set_masks", masks)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """The global batch's mean loss and its all-reduced gradients, each worker computing its slice."""
        return self._run("grads", np.ascontiguousarray(x), np.ascontiguousarray(y))

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """The optimizer's state on every worker."""
        self._run("init_optimizer", config)

    def set_lr(self, lr: float) -> None:
        """Every worker's learning rate."""
        self._run("set_lr", lr)

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The host arrays: train_step sends them to every worker."""
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def train_step(self, batch: tuple[np.ndarray, np.ndarray]) -> float:
        """One update of every replica on the global batch; its global mean loss."""
        return self._run("train", *batch)

    def prepare_epoch(self, x: np.ndarray, y: np.ndarray, order: Sequence[np.ndarray]) -> Epoch:
        """The epoch's images, labels and batches sent once to every worker, which keeps them resident."""
        epoch = Epoch(next(self._epochs), len(order))
        # Contiguous copies: the workers get unpickled ones, and a worker in this process must run on what they
        # run on (torch refuses a view with negative strides, and a step one worker skips hangs the others).
        self._run("epoch", epoch.key, np.ascontiguousarray(x), np.ascontiguousarray(y),
                  [np.array(o, np.int64) for o in order])
        return epoch

    def train_steps(self, epoch: Epoch, start: int, stop: int, lrs: Sequence[float]) -> np.ndarray:
        """Steps start..stop-1 on every worker, one command for all of them; the global mean losses."""
        if not 0 <= start <= stop <= epoch.steps or len(lrs) != stop - start:
            raise BackendError(f"{self.name}@{self.mode}: steps {start}..{stop} with {len(lrs)} learning rates do "
                               f"not fit an epoch of {epoch.steps} steps")
        return self._run("steps", epoch.key, start, stop, [float(lr) for lr in lrs])

    def replicas_identical(self) -> bool:
        """Whether every worker holds bit-identical parameters (a worker's None: its own copies differ)."""
        digests = self._gather("digest")
        return None not in digests and len(set(digests)) == 1

    def worker_peak_rss_mb(self) -> list[float]:
        """Each worker's process high-water mark (VmHWM) in MiB, the first worker's first."""
        return self._gather("memory")

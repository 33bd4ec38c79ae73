"""The torch.distributed process group behind torch@ddp: started by torchrun, or here with torchrun's environment.

Rank 0 is the harness's process and drives the others: it broadcasts each command over a gloo group, every rank
runs it on its own replica, and the collectives inside (DDP's gradient all-reduce) keep them in lockstep."""
from __future__ import annotations

import atexit
import datetime
import os
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.distributed as dist

from fwbench.backends import workers
from fwbench.backends.base import BackendError

# A collective that waits longer than this fails instead of hanging: a worker died or skipped one.
TIMEOUT = datetime.timedelta(seconds=workers.timeout_s())


def requested(device: str) -> int:
    """The workers asked for: torchrun's WORLD_SIZE in a group, else --workers, else every GPU or 2 on a CPU."""
    if launched() or "FWBENCH_DDP_CHILD" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return workers.requested(max(1, torch.cuda.device_count()) if device == "cuda" else workers.CPU_DEFAULT)


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment contract), not by fwbench."""
    return "WORLD_SIZE" in os.environ and "FWBENCH_DDP_CHILD" not in os.environ


class Group:
    """This process's place in the group: its rank, the world size, the device, and the command channel."""

    def __init__(self, size: int, device: str):
        self.size, self.device, self.children = size, device, []
        self.dropped: list[int] = []  # keys of replicas collected on rank 0, dropped everywhere with the next command
        backend = "nccl" if device == "cuda" else "gloo"
        if launched() or "FWBENCH_DDP_CHILD" in os.environ:
            dist.init_process_group(backend, timeout=TIMEOUT)  # torchrun's environment: env://
        else:  # rank 0 of workers started here; this process's environment stays as it was, for its own children
            port = workers.free_port()
            self._spawn(size, port)
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=size,
                                    timeout=TIMEOUT)
        self.rank = dist.get_rank()
        if dist.get_world_size() != size:
            raise BackendError(f"torch@ddp: the process group has {dist.get_world_size()} workers, "
                               f"but {size} were asked for")
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        # Commands go over gloo even beside NCCL: they are Python objects on the host.
        self.control = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else dist.group.WORLD
        if self.rank == 0:
            atexit.register(self.close)

    def _spawn(self, size: int, port: int) -> None:
        """Ranks 1..size-1 as fresh processes on this machine, with torchrun's environment contract."""
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(size),
                   FWBENCH_DDP_CHILD=str(os.getpid()), FWBENCH_DDP_DEVICE=self.device)
        for rank in range(1, size):
            self.children.append(subprocess.Popen([sys.executable, "-m", "fwbench.backends.torch_ddp"],
                                                  env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                                  stdin=subprocess.DEVNULL))

    def run(self, command: str, *args) -> Any:
        """Rank 0: every rank runs HANDLERS[command](*args); this rank's result."""
        dist.broadcast_object_list([(command, args)], src=0, group=self.control)
        return HANDLERS[command](*args)

    def gather(self, command: str, *args) -> list[Any]:
        """Rank 0: every rank runs the command, whose handler all-gathers the ranks' values; that list."""
        return self.run(command, *args)

    def follow(self) -> None:
        """Ranks above 0: run rank 0's commands until it closes the group, then leave the process."""
        while True:
            box = [None]
            dist.broadcast_object_list(box, src=0, group=self.control)
            command, args = box[0]
            if command == "close":
                dist.barrier(group=self.control)  # see close()
                dist.destroy_process_group()
                os._exit(0)  # the harness code after the build must not run on a follower
            try:
                HANDLERS[command](*args)
            except Exception:  # noqa: BLE001 - rank 0 ran the same command on the same input: it reports the error
                pass

    def close(self) -> None:
        """Rank 0 at exit: tell the followers to leave, and wait for them (a few seconds, then kill)."""
        try:
            dist.broadcast_object_list([("close", ())], src=0, group=self.control)
            # Every rank past its last collective before any connection closes: a peer that left mid-teardown
            # made rank 0 abort ("terminate called without an active exception") about once in six under torchrun.
            dist.barrier(group=self.control)
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a follower already gone: nothing left to tell
            pass
        deadline = time.monotonic() + 10
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


# Command name -> the function every rank runs (torch_ddp.py fills it).
HANDLERS: dict[str, Callable[..., Any]] = {}
_group: Group | None = None


def group(device: str) -> Group:
    """This process's group, started on first use; BackendError if it was started for other workers or device."""
    global _group
    size = requested(device)
    if _group is None:
        _group = Group(size, device)
    elif (_group.size, _group.device) != (size, device):
        raise BackendError(f"torch@ddp: this process already runs {_group.size} workers on {_group.device}; "
                           f"{size} on {device} need a process of their own")
    return _group


def serve() -> None:
    """A follower fwbench started (python -m fwbench.backends.torch_ddp): serve rank 0 until it closes the group."""
    workers.watch_parent("FWBENCH_DDP_CHILD")
    group(os.environ.get("FWBENCH_DDP_DEVICE", "cpu")).follow()


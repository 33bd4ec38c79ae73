"""torch@ddp: stock DistributedDataParallel over N workers, each taking a contiguous slice of every batch."""
from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from fwbench.backends import ddp_group, workers
from fwbench.backends.base import BackendError, check_device, check_mode
from fwbench.backends.driven import Driven
from fwbench.backends.torch_backend import TorchBackend, _host, from_native
from fwbench.harness.probes.memory import peak_rss_mb  # the standard library only
from fwbench.models.params import Params
from fwbench.models.spec import BatchNorm, ModelSpec

REPLICAS: dict[int, Replica] = {}   # this rank's replica of each torch@ddp instance, by key


def bounds(size: int, workers: int, rank: int) -> tuple[int, int]:
    """Rows lo:hi of a batch of `size` that `rank` takes: contiguous, the first size % workers one row longer."""
    base, extra = divmod(size, workers)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class Replica:
    """One rank's copy of the model: torch eager, its module wrapped in DistributedDataParallel."""

    def __init__(self, spec: ModelSpec, params: Params | None, device: str, dtype: str, seed: int):
        group = ddp_group.group(device)
        self.rank, self.size = group.rank, group.size
        if any(isinstance(layer, BatchNorm) for layer in spec.layers):
            # DDP normalises each worker's slice on its own, which is not the global batch's gradient, and
            # SyncBatchNorm, which would be, runs on GPUs only.
            raise BackendError("torch@ddp does not take batch norm yet: each worker would normalise its own slice "
                               "(SyncBatchNorm needs a GPU); use torch for this spec")
        if device == "cuda":
            torch.cuda.set_device(group.local_rank)
        torch.set_num_threads(workers.threads(self.size))
        self.local = TorchBackend(spec, params, device=device, dtype=dtype, seed=seed)
        ids = [group.local_rank] if device == "cuda" else None
        self.ddp = DistributedDataParallel(self.local.model, device_ids=ids)
        self.masks: dict[str, torch.Tensor] | None = None  # the global batch's, sliced per pass
        self.epochs: dict[int, tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]] = {}
        self.step_s: list[float] = []  # this rank's seconds per step since they were last gathered

    def set_masks(self, masks: Params | None) -> None:
        self.local.set_masks(masks)  # checked, and in the model's dtype and device
        self.masks = None if masks is None else {k: m.mask for k, m in self.local.dropouts.items()}

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slice's summed cross-entropy, and it scaled so that DDP's mean over workers is the global mean."""
        lo, hi = bounds(len(x), self.size, self.rank)
        if self.masks is not None:
            for k, module in self.local.dropouts.items():
                module.mask = self.masks[k][lo:hi]
        total = F.cross_entropy(self.ddp(x[lo:hi]), y[lo:hi], reduction="sum")
        return total, total * (self.size / len(x))

    def _global(self, totals: list[torch.Tensor], sizes: list[int]) -> np.ndarray:
        """Each step's global mean loss from every rank's slice sums: one all-reduce for all of them."""
        summed = torch.stack(totals).double()
        dist.all_reduce(summed)
        return summed.cpu().numpy() / np.asarray(sizes, np.float64)

    def _batch(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.local._x(x), torch.from_numpy(np.asarray(y)).to(self.local._dev, torch.long)

    def grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """The global batch's mean loss and its gradients, all-reduced; parameters untouched."""
        model = self.local.model
        self.local._train(True)
        model.zero_grad(set_to_none=True)
        total, scaled = self._loss(*self._batch(x, y))
        scaled.backward()  # DDP all-reduces the gradients here
        grads = from_native({k: _host(p.grad) for k, p in self.local.named.items()})
        model.zero_grad(set_to_none=True)
        return float(self._global([total.detach()], [len(x)])[0]), grads

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt = self.local._optimizer()
        self.local._train(True)
        opt.zero_grad(set_to_none=True)
        total, scaled = self._loss(x, y)
        scaled.backward()
        opt.step()
        return total.detach()

    def train(self, x: np.ndarray, y: np.ndarray) -> float:
        """One update on the global batch; its global mean loss."""
        return float(self._global([self._step(*self._batch(x, y))], [len(x)])[0])

    def steps(self, epoch: int, start: int, stop: int, lrs: list[float]) -> np.ndarray:
        """Steps start..stop-1 of a resident epoch at lrs; their global mean losses, with one all-reduce."""
        x, y, order = self.epochs[epoch]
        totals, sizes = [], []
        for i, lr in zip(range(start, stop), lrs, strict=True):
            began = time.perf_counter()
            self.local.set_lr(lr)
            idx = torch.from_numpy(np.asarray(order[i], np.int64)).to(x.device)
            totals.append(self._step(x[idx], y[idx]))
            sizes.append(len(order[i]))
            self.step_s.append(time.perf_counter() - began)
        return self._global(totals, sizes) if totals else np.zeros(0)

    def keep_epoch(self, epoch: int, x: np.ndarray, y: np.ndarray, order: list[np.ndarray]) -> None:
        self.epochs = {epoch: (*self._batch(x, y), order)}  # the newest only: an epoch is prepared, then run

    def gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def timings(self) -> list[list[float]]:
        """Every rank's seconds per step since the last call, gathered; each rank's list starts afresh."""
        out, self.step_s = self.gather(self.step_s), []
        return out

    def peak_rss_mb(self) -> list[float]:
        """Every rank's process high-water mark (VmHWM), in MiB, gathered."""
        return self.gather(peak_rss_mb())

    def digest(self) -> list[str]:
        """Every rank's parameters as one hash each: identical replicas give identical hashes."""
        h = hashlib.sha256()
        for k, v in sorted(self.local.get_params().items()):
            h.update(k.encode() + np.ascontiguousarray(v).tobytes())
        return self.gather(h.hexdigest())


def _build(key: int, spec: ModelSpec, params: Params | None, device: str, dtype: str, seed: int) -> None:
    if ddp_group.group(device).rank != 0:
        TorchBackend.pin_numerics()  # rank 0's harness pinned its own
    REPLICAS[key] = Replica(spec, params, device, dtype, seed)


def _on(method: str):
    """A handler calling one method of the keyed replica."""
    return lambda key, *args: getattr(REPLICAS[key], method)(*args)


def _on_local(method: str):
    """A handler calling one method of the keyed replica's plain torch backend."""
    return lambda key, *args: getattr(REPLICAS[key].local, method)(*args)


ddp_group.HANDLERS.update({
    "build": _build,
    "drop": lambda keys: [REPLICAS.pop(k, None) for k in keys],
    "set_params": _on_local("set_params"),
    "set_buffers": _on_local("set_buffers"),
    "init_optimizer": _on_local("init_optimizer"),
    "set_lr": _on_local("set_lr"),
    "set_masks": _on("set_masks"),
    "grads": _on("grads"),
    "train": _on("train"),
    "epoch": _on("keep_epoch"),
    "steps": _on("steps"),
    "digest": _on("digest"),
    "timings": _on("timings"),
    "memory": _on("peak_rss_mb"),
})


class TorchDDPBackend(Driven):
    """torch@ddp as the harness sees it: rank 0 of the group, which drives every rank's replica."""

    name = "torch"
    framework = "torch"
    local = TorchBackend
    UNSUPPORTED_LAYERS = frozenset({"batchnorm"})  # see Replica: per-slice statistics are not the global batch's
    modes = ("ddp",)
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "ddp": "stock torch.nn.parallel.DistributedDataParallel (gloo on the CPU, NCCL on GPUs) over --workers "
               "processes, torchrun's or started with its environment; each worker takes a contiguous slice of "
               "every batch and its summed loss scaled by workers / batch, so the all-reduced gradient is the "
               "global batch's; epochs resident on every worker",
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Start the group on first use and build a replica on every rank; params=None: torch's seeded init."""
        self.mode = check_mode(type(self), mode)
        check_device(TorchBackend, device)
        group = ddp_group.group(device)
        if group.rank != 0:
            group.follow()  # torchrun started this rank too: it serves rank 0 from here and never returns
        self.spec, self.device, self.workers = spec, device, group.size
        self._attach(group)
        self._run("build", spec, params, device, dtype, seed)
        self.replica = REPLICAS[self.key]
        self.dtype = self.replica.local.dtype
        self.threads_per_worker = torch.get_num_threads()  # as Replica set it, the same on every rank

    def get_params(self) -> Params:
        """Rank 0's parameters (every rank holds the same: see replicas_identical)."""
        return self.replica.local.get_params()

    def get_buffers(self) -> Params:
        """Rank 0's running statistics."""
        return self.replica.local.get_buffers()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Rank 0's evaluation logits: evaluation needs no other worker."""
        return self.replica.local.forward(x)

    def worker_step_s(self) -> list[list[float]]:
        """Each worker's seconds per step since the last call (steps on a resident epoch only)."""
        return self._gather("timings")

    def peak_device_memory(self) -> int | None:
        """Rank 0's max_memory_allocated on cuda."""
        return self.replica.local.peak_device_memory()

    def synchronize(self) -> None:
        """Every command has returned when its collectives did; a GPU's queue still drains here."""
        self.replica.local.synchronize()


if __name__ == "__main__":  # a follower rank started by ddp_group, with this module's handlers
    ddp_group.serve()

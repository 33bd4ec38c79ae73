"""flax@dp: flax@step's program over a mesh of every worker's devices, driven from the harness's process."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fwbench.backends import jax_processes, workers
from fwbench.backends.base import BackendError, check_device, check_mode
from fwbench.backends.driven import Driven, Group, Here
from fwbench.backends.flax_backend import BATCHNORM, FlaxBackend
from fwbench.harness.probes.memory import peak_rss_mb  # the standard library only
from fwbench.models.params import Params
from fwbench.models.spec import ModelSpec

REPLICAS: dict[int, Any] = {}                      # in a worker: its FlaxMesh of each flax@dp instance, by key
EPOCHS: dict[tuple[int, int], list] = {}           # in a worker: (instance, epoch) -> the epoch's batches
_processes: jax_processes.Processes | None = None  # in the harness: the CPU workers, started on first use


def _build(key: int, spec: ModelSpec, params: Params | None, device: str, dtype: str, seed: int) -> None:
    from fwbench.backends.flax_mesh import FlaxMesh
    REPLICAS[key] = FlaxMesh(spec, params, device=device, dtype=dtype, seed=seed, mode="dp")


def _drop(keys: list[int]) -> None:
    for key in keys:
        REPLICAS.pop(key, None)
        for k in [k for k in EPOCHS if k[0] == key]:
            del EPOCHS[k]


def _epoch(key: int, epoch: int, x: np.ndarray, y: np.ndarray, order: list[np.ndarray]) -> None:
    for k in [k for k in EPOCHS if k[0] == key]:  # the newest only: an epoch is prepared, then run
        del EPOCHS[k]
    EPOCHS[key, epoch] = REPLICAS[key].prepare_epoch(x, y, order)


def _steps(key: int, epoch: int, start: int, stop: int, lrs: list[float]) -> np.ndarray:
    return np.array([float(loss) for loss in REPLICAS[key].train_steps(EPOCHS[key, epoch], start, stop, lrs)])


def _on(method: str):
    """A handler calling one method of the keyed replica."""
    return lambda key, *args: getattr(REPLICAS[key], method)(*args)


HANDLERS = {
    "build": _build,
    "drop": _drop,
    "get_params": _on("get_params"),
    "set_params": _on("set_params"),
    "get_buffers": _on("get_buffers"),
    "set_buffers": _on("set_buffers"),
    "set_masks": _on("set_masks"),
    "forward": _on("forward"),
    "grads": _on("loss_and_grads"),
    "init_optimizer": _on("init_optimizer"),
    "set_lr": _on("set_lr"),
    "train": lambda key, x, y: float(REPLICAS[key].train_step(REPLICAS[key].prepare_batch(x, y))),
    "epoch": _epoch,
    "steps": _steps,
    "digest": _on("digest"),
    "memory": lambda key: peak_rss_mb(),
    "device_memory": _on("peak_device_memory"),
}


def group(count: int, device: str) -> Group:
    """A CPU's worker processes, started on first use; GPUs are devices of this process, as on one JAX host."""
    global _processes
    if device != "cpu":
        return Here(HANDLERS)
    if _processes is None or _processes.broken:
        _processes = jax_processes.Processes(count, device, "fwbench.backends.flax_dp")
    elif _processes.count != count:
        raise BackendError(f"flax@dp: this process already runs {_processes.count} CPU workers; {count} need a "
                           "process of their own")
    return _processes


class FlaxDPBackend(Driven):
    """flax@dp as the harness sees it: its worker processes, each running a FlaxMesh over every worker's devices."""

    name = "flax"
    framework = "flax"
    local = FlaxBackend
    UNSUPPORTED_LAYERS = FlaxBackend.UNSUPPORTED_LAYERS
    modes = ("dp",)
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "dp": "stock jax.sharding data parallelism: flax@step's program under jax.jit with the parameters and "
              "optimizer state replicated over a Mesh of --workers devices (NamedSharding, PartitionSpec()) and "
              "each batch split along its first axis (PartitionSpec('data')), so XLA inserts the gradient "
              "all-reduce and batch norm sees the global batch; a batch the workers do not divide runs "
              "replicated; on a CPU each worker is a process with one device and its own cores, joined by "
              "jax.distributed with gloo collectives; on GPUs one process drives them all; epochs resident on "
              "every worker" + BATCHNORM,
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Start the workers on first use and build a replica on each; params=None: flax's seeded init."""
        self.mode = check_mode(type(self), mode)
        check_device(FlaxBackend, device)
        import jax
        count = workers.requested(len(jax.devices("gpu")) if device == "cuda" else workers.CPU_DEFAULT)
        self.spec, self.device, self.workers = spec, device, count
        self._attach(group(count, device))
        self._run("build", spec, params, device, dtype, seed)
        self.dtype = np.dtype(dtype).type
        # A CPU worker runs on its own cores (jax_processes pins it); on GPUs the host threads are not the limit.
        self.threads_per_worker = workers.threads(count)
        self.driver_apart = device == "cpu"  # this process only drives: its memory is the cell's too

    def get_params(self) -> Params:
        """The first worker's parameters (every worker holds the same: see replicas_identical)."""
        return self._run("get_params")

    def get_buffers(self) -> Params:
        """The first worker's running statistics."""
        return self._run("get_buffers")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation logits of the global batch, split over the workers and gathered."""
        return self._run("forward", np.ascontiguousarray(x))

    def peak_device_memory(self) -> int | None:
        """The first worker's first GPU's peak_bytes_in_use; None on the CPU."""
        return self._run("device_memory")

    def synchronize(self) -> None:
        """Nothing: every command returns once each worker has its answer on the host."""


if __name__ == "__main__":  # a worker started by jax_processes, with this module's handlers
    jax_processes.serve(HANDLERS)

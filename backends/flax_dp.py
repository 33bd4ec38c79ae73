"""flax@dp: flax@step's program jitted over a device mesh, parameters replicated and each batch split across it."""
from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fwbench.backends import workers
from fwbench.backends.base import BackendError
from fwbench.backends.engine import parallel
from fwbench.backends.flax_backend import BATCHNORM, FlaxBackend


def _ask_for_cpu_devices() -> None:
    """As many CPU devices as --workers asks for: JAX splits its CPU into virtual devices only before it starts."""
    try:
        wanted = workers.requested(workers.CPU_DEFAULT)
        if jax.config.jax_num_cpu_devices < wanted:
            jax.config.update("jax_num_cpu_devices", wanted)
    except (BackendError, RuntimeError):  # a bad --workers, or JAX already started: _placement says which
        pass


_ask_for_cpu_devices()  # on import, which the registry does before any backend is built


class FlaxDPBackend(FlaxBackend):
    """flax@step with jax.sharding: a 1-d mesh over `workers` devices, named "data"."""

    name = "flax"
    modes = ("dp",)
    data_parallel = True
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "dp": "stock jax.sharding data parallelism: flax@step's program under jax.jit with the parameters and "
              "optimizer state replicated over a Mesh of --workers devices (NamedSharding, PartitionSpec()) and "
              "each batch split along its first axis (PartitionSpec('data')), so XLA inserts the gradient "
              "all-reduce and batch norm sees the global batch; a batch the workers do not divide runs "
              "replicated; on a CPU the devices are virtual (jax_num_cpu_devices) and share one process's "
              "threads" + BATCHNORM,
    }

    def _placement(self, device: str):
        platform = "gpu" if device == "cuda" else "cpu"
        self.workers = workers.requested(len(jax.devices("gpu")) if device == "cuda" else workers.CPU_DEFAULT)
        devices = jax.devices(platform)
        if len(devices) < self.workers:
            why = (" (JAX fixes its CPU device count when it starts, and it started before flax@dp was loaded)"
                   if platform == "cpu" else "")
            raise BackendError(f"flax@dp: {self.workers} workers asked for, but this process has {len(devices)} "
                               f"{platform} device(s){why}; use --workers {len(devices)}, or run it in a process "
                               "of its own")
        self.mesh = Mesh(np.array(devices[:self.workers]), ("data",))
        self.virtual = platform == "cpu" and self.workers > 1
        self.threads_per_worker = parallel.cores()  # XLA's CPU devices share the process's thread pool
        return NamedSharding(self.mesh, PartitionSpec())

    def _along_batch(self, size: int):
        if size % self.workers:
            return self._dev  # replicated: NamedSharding cannot split an uneven batch
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def scaling_note(self) -> str | None:
        """Why this cell's figures do not measure scaling, or None."""
        if self.virtual:
            return f"not a scaling measurement: {self.workers} virtual CPU devices in one process share its threads"
        return None

    def replicas_identical(self) -> bool:
        """Whether every device's copy of every parameter is bit-identical."""
        for leaf in jax.tree_util.tree_leaves(self.params):
            copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
            if any(not np.array_equal(copies[0], c) for c in copies[1:]):
                return False
        return True

    def peak_device_memory(self) -> int | None:
        """The first device's peak_bytes_in_use on GPUs."""
        if self.device != "cuda":
            return None
        return (self.mesh.devices.flat[0].memory_stats() or {}).get("peak_bytes_in_use")

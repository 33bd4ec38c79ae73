"""flax@step's program over a 1-d device mesh: parameters replicated, each batch split; what a flax@dp worker runs."""
from __future__ import annotations

import hashlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fwbench.backends import workers
from fwbench.backends.base import BackendError
from fwbench.backends.flax_backend import FlaxBackend


class FlaxMesh(FlaxBackend):
    """flax@step with jax.sharding over `workers` devices of every JAX process, named "data"."""

    modes = ("dp",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Logits split over processes cannot be read by one: evaluation gathers them on every device.
        self._forward = jax.jit(self._forward, out_shardings=self._dev)

    def _placement(self, device: str):
        platform = "gpu" if device == "cuda" else "cpu"
        devices = jax.devices(platform)  # every process's, once jax.distributed has joined them
        self.workers = workers.requested(len(devices))
        if len(devices) < self.workers:
            raise BackendError(f"flax@dp: {self.workers} workers asked for, but the JAX processes have "
                               f"{len(devices)} {platform} device(s); use --workers {len(devices)}")
        self.mesh = Mesh(np.array(devices[:self.workers]), ("data",))
        return NamedSharding(self.mesh, PartitionSpec())

    def _along_batch(self, size: int):
        if size % self.workers:
            return self._dev  # replicated: NamedSharding cannot split an uneven batch
        return NamedSharding(self.mesh, PartitionSpec("data"))

    def digest(self) -> str | None:
        """One hash of this process's copies of the parameters; None if two of its devices' copies differ."""
        h = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(self.params):
            copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
            if any(not np.array_equal(copies[0], c) for c in copies[1:]):
                return None
            h.update(np.ascontiguousarray(copies[0]).tobytes())
        return h.hexdigest()

    def peak_device_memory(self) -> int | None:
        """This process's first device's peak_bytes_in_use on GPUs."""
        if self.device != "cuda":
            return None
        return (self.mesh.local_devices[0].memory_stats() or {}).get("peak_bytes_in_use")

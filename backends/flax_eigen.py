"""flax@eigen: stock flax@step, with XLA's CPU convolutions on Eigen instead of YNNPACK (an XLA flag)."""
from __future__ import annotations

import os
from typing import ClassVar

import jax

from fwbench.backends.base import BackendError
from fwbench.backends.flax_backend import BATCHNORM, FlaxBackend

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_started = False  # JAX started here, with FLAG


def start() -> None:
    """Start JAX with FLAG in XLA_FLAGS, which XLA reads then, once; BackendError if JAX already runs without it.

    os.environ is left as it was: the processes this one starts (bench cells of other backends) must not inherit
    the flag."""
    global _started
    from jax._src import xla_bridge  # the one place that says whether JAX has started
    if _started or FLAG in os.environ.get("XLA_FLAGS", "").split():
        return
    if xla_bridge.backends_are_initialized():
        raise BackendError("flax@eigen sets an XLA flag that XLA reads only when JAX starts, and JAX already runs "
                           "in this process; run flax@eigen in a process of its own (agree and bench do)")
    before = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"{before or ''} {FLAG}".strip()
    try:
        jax.devices()  # XLA parses its flags as its CPU client starts
    finally:
        if before is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = before
    _started = True


class FlaxEigenBackend(FlaxBackend):
    """flax@step in a process whose XLA leaves convolutions to Eigen."""

    modes = ("eigen",)
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "eigen": "stock flax.linen and optax as in step, in a process whose XLA runs convolutions on Eigen rather "
                 f"than YNNPACK (XLA_FLAGS={FLAG}, a setting of jaxlib's, no fwbench code); XLA reads the flag "
                 "once a process, so this mode runs in a process of its own" + BATCHNORM,
    }

    def __init__(self, *args, **kwargs):
        start()
        super().__init__(*args, **kwargs)

    @classmethod
    def devices(cls) -> list[str]:
        """FlaxBackend's, once JAX has started with the flag (asking for devices starts it)."""
        start()
        return super().devices()

"""fwbench-jaxraw: an fwbench backend on raw jax.numpy and jax.lax, with no flax and no optax."""
from fwbench_jaxraw.backend import JaxRawBackend

__all__ = ["JaxRawBackend"]

"""The course's scalar autograd engine (micrograd's Value) and the spec's layers built from it."""
from fwbench.backends.micrograd.engine import Value

__all__ = ["Value"]

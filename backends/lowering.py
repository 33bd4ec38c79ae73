"""Lowering through a table: each backend maps layer class -> op, and a layer type missing there is refused."""
from __future__ import annotations

from typing import TypeVar

from fwbench.backends.base import BackendError
from fwbench.models.spec import ModelSpec

Op = TypeVar("Op")


def lower(table: dict[type, Op], spec: ModelSpec, backend: str) -> list[Op]:
    """table's op for each layer of spec, in order; a BackendError naming the first layer the table lacks."""
    ops = []
    for i, layer in enumerate(spec.layers):
        op = table.get(type(layer))
        if op is None:
            # BackendError, so the conformance kit reports the type as not supported rather than as a crash.
            raise BackendError(f"backend '{backend}' has no lowering for layer {i} ({layer.type})")
        ops.append(op)
    return ops

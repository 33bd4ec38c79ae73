"""Tensor: an array, its gradient, and the closure that passes that gradient to its parents."""
from __future__ import annotations

import numpy as np

from fwbench.backends.engine.xp import module_of


class Tensor:
    """Stores an array and its gradient; micrograd's Value, generalised to arrays."""

    def __init__(self, data, requires_grad: bool = False, _prev: tuple[Tensor, ...] = (), _op: str = ""):
        # A device (CuPy) array must stay on its device; lists and NumPy scalars need to become arrays.
        self.data = data if type(data) is np.ndarray or module_of(data) is not np else np.asarray(data)
        self.grad: np.ndarray | None = None  # filled by backward(); None means "no gradient yet"
        # A result needs a gradient when any parent does; inputs such as images need none,
        # which lets ops skip work (the first conv never forms d(loss)/d(image)).
        self.requires_grad = requires_grad or any(p.requires_grad for p in _prev)
        self._prev = _prev
        # Called with this tensor's gradient. Taking it as an argument rather than reading
        # out.grad keeps the closure from referencing its own output: no reference cycle, so
        # each step's graph and its large arrays are freed at once instead of by the garbage collector.
        self._backward = lambda g: None
        self._op = _op
        # Where a parameter's gradient is gathered for the optimizer (a view of one flat array), when it is: an op
        # may write the first gradient there itself (gradient_out), and the copy into it is then saved.
        self.sink: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, op={self._op!r})"

    def accumulate(self, g: np.ndarray) -> None:
        """Add g to this tensor's gradient; a tensor used twice receives the sum of both paths."""
        # Not in place: the first g may be an array another tensor also holds.
        self.grad = g if self.grad is None else self.grad + g

    def gradient_out(self) -> np.ndarray | None:
        """Where an op may write this tensor's gradient, to accumulate() it after: its sink, while it has none yet."""
        return self.sink if self.grad is None else None

    def zero_grad(self) -> None:
        """Forget the gradient before the next backward pass."""
        self.grad = None

    def backward(self) -> None:
        """Fill .grad of every tensor this one depends on, by the chain rule in reverse topological order."""
        topo: list[Tensor] = []
        _topo_sort(self, topo, set())
        self.grad = module_of(self.data).ones_like(self.data)
        for v in reversed(topo):
            v._backward(v.grad)

    def __add__(self, other: Tensor) -> Tensor:
        out = Tensor(self.data + other.data, _prev=(self, other), _op="+")

        def _backward(g):
            for t in (self, other):
                if t.requires_grad:
                    t.accumulate(_unbroadcast(g, t.shape))
        out._backward = _backward
        return out

    def __mul__(self, other: Tensor) -> Tensor:
        out = Tensor(self.data * other.data, _prev=(self, other), _op="*")

        def _backward(g):
            if self.requires_grad:
                self.accumulate(_unbroadcast(g * other.data, self.shape))
            if other.requires_grad:
                other.accumulate(_unbroadcast(g * self.data, other.shape))
        out._backward = _backward
        return out

    def sum(self) -> Tensor:
        """Sum of all elements, as a 0-d tensor."""
        out = Tensor(self.data.sum(), _prev=(self,), _op="sum")

        def _backward(g):
            if self.requires_grad:
                self.accumulate(module_of(g).broadcast_to(g, self.shape))
        out._backward = _backward
        return out


def _topo_sort(v: Tensor, topo: list[Tensor], visited: set[int]) -> None:
    """Append v's ancestors that need a gradient, then v, to topo (parents always before children)."""
    # A module-level function, not a closure inside backward(): a recursive closure refers to
    # itself, and that cycle would keep topo, and so the whole graph, alive until the next gc.
    if id(v) in visited or not v.requires_grad:
        return
    visited.add(id(v))
    for parent in v._prev:
        _topo_sort(parent, topo, visited)
    topo.append(v)


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum g over the axes that broadcasting added or stretched, so it matches shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g

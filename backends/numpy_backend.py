"""The `numpy` backend: the spec lowered to the from-scratch engine in backends/engine, on NumPy or (cuda) CuPy."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device
from fwbench.backends.engine import (SGD, Adam, Tensor, avgpool2d, batchnorm, conv2d, cross_entropy, dense, dropout,
                                     flatten, maxpool2d, relu, sigmoid, tanh)
from fwbench.backends import numpy_split as split
from fwbench.backends.engine import parallel
from fwbench.backends.engine.layout import chw, to_engine
from fwbench.backends.lowering import lower
from fwbench.backends.messages import first_line
from fwbench.models.params import Params, check, check_masks, init_buffers, init_params
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ModelSpec,
                                 ReLU, Sigmoid, Tanh)

DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class Pass:
    """How one forward pass runs: training or evaluation, and where batch norm's and dropout's state comes from."""
    training: bool
    buffers: dict[str, Any]            # "{i}.running_mean" / "{i}.running_var" -> array, updated in place
    update: bool = False               # training: update the running statistics (a train step, not loss_and_grads)
    masks: dict[str, Any] | None = None  # "{i}.mask" -> keep-mask from the harness, channels last; None: from rng
    rng: Any = None                    # the backend's own generator for dropout
    link: Any = None                   # a replica's share of the batch: its engine.replica.Link, else None

    def keep(self, i: int, layer: Dropout, shape: tuple[int, ...]):
        """Layer i's keep-mask for an input of this shape."""
        if self.masks is not None:
            return self.masks[f"{i}.mask"]
        # float32 draws: half the bits of float64 and about twice as fast; 24 bits resolve any rate well enough.
        return self.rng.random(shape, dtype=np.float32) >= layer.rate


def _batchnorm(h: Tensor, i: int, layer: BatchNorm, w: Tensor, b: Tensor, run: Pass, act: str | None = None) -> Tensor:
    running = run.buffers[f"{i}.running_mean"], run.buffers[f"{i}.running_var"]
    return batchnorm(h, w, b, layer.eps, running, run.training, layer.momentum if run.update else None, act,
                     run.link)


def _dropout(h: Tensor, i: int, layer: Dropout, w: None, b: None, run: Pass) -> Tensor:
    if not run.training or not layer.rate:
        return h
    if run.link is None:
        return dropout(h, run.keep(i, layer, h.shape), layer.rate)
    # The first replica draws the whole batch's mask, as one process would, and hands each replica its images'.
    whole = run.keep(i, layer, (run.link.images, *h.shape[1:])) if run.link.rank == 0 else None
    return dropout(h, run.link.scatter(whole), layer.rate)


# Layer type -> op(h, i, layer, weight, bias, run): layer i, its parameter tensors (None for a layer without), the Pass.
# The lambdas look the engine ops up when they run, so a test can swap one (tests/test_ties.py does).
LOWER: dict[type, Callable] = {
    Conv2D: lambda h, i, layer, w, b, run: conv2d(h, w, b, layer.stride, layer.pads(chw(h.shape))),
    ReLU: lambda h, i, layer, w, b, run: relu(h),
    MaxPool2D: lambda h, i, layer, w, b, run: maxpool2d(h, layer.size, layer.step),
    Flatten: lambda h, i, layer, w, b, run: flatten(h),
    Dense: lambda h, i, layer, w, b, run: dense(h, w, b),
    Tanh: lambda h, i, layer, w, b, run: tanh(h),
    Sigmoid: lambda h, i, layer, w, b, run: sigmoid(h),
    AvgPool2D: lambda h, i, layer, w, b, run: avgpool2d(h, layer.size, layer.step),
    BatchNorm: _batchnorm,
    Dropout: _dropout,
}
# One call of _logits' loop: op(h, i, layer, w, b, run).
Step = tuple[Callable, int, Layer, Tensor | None, Tensor | None]


class NumpyBackend(Backend):
    """NumPy, or CuPy on cuda: parameters in the canonical layout, activations channels last inside the engine."""

    name = "numpy"
    framework = "numpy"
    UNSUPPORTED_LAYERS = frozenset()  # LOWER covers every layer type
    # The fused ops reproduce relu's convention (relu'(0) = 0); a subclass that swaps relu for another convention
    # turns the fusion off.
    fuse = True

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None uses the shared seeded initialiser (NumPy has no default of its own)."""
        # The engine takes its array module from its arrays: CuPy's on cuda, so the same code runs there.
        # Only cuda probes for CuPy; a CPU build never tries to import it.
        if device == "cuda":
            self.xp = load_cupy()
        else:
            if device != "cpu":
                check_device(type(self), device)  # refuses it, naming the devices there are
            self.xp = np
        if dtype not in DTYPES:
            raise BackendError(f"backend 'numpy' does not support dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        self.spec, self.device, self.dtype = spec, device, np.dtype(dtype)
        if params is None:
            params = init_params(spec, seed, dtype)
        check(spec, params)
        # Owned copies: the optimizer updates these arrays in place, so they must never alias the caller's.
        # All of them are views of one flat array, and their gradients are gathered into another, so
        # the optimizer runs each of its operations once over every parameter instead of once per tensor.
        flat = self.xp.empty(sum(np.size(v) for v in params.values()), dtype=self.dtype)
        self.params = {k: Tensor(np.empty(np.shape(v), self.dtype), requires_grad=True) for k, v in params.items()}
        self.optimizer: SGD | Adam | None = None
        self.bind(flat, self.xp.empty_like(flat))
        for k, v in params.items():
            self.params[k].data[...] = self.xp.asarray(v)
        # The ops are chosen once: a step runs the list, with no per-layer dispatch or key lookups.
        self._steps = plan(spec, self.params, self.fuse)
        self.buffers = {k: self.xp.asarray(v) for k, v in init_buffers(spec, dtype).items()}
        self.masks: dict | None = None
        self.rng = self.xp.random.default_rng(seed)  # dropout's own draws, when the harness gives no masks
        self.replicas = split.Replicas()  # the training step's shares on the engine's worker processes

    def bind(self, flat, flat_grad) -> None:
        """Make every parameter a view of its segment of flat, its gradient's sink one of flat_grad (no copy)."""
        self.flat, self.flat_grad, self.grad_views, start = flat, flat_grad, [], 0
        for t in self.params.values():
            stop = start + t.data.size
            t.data = stored(flat[start:stop], t.shape)
            t.sink = stored(flat_grad[start:stop], t.shape)
            self.grad_views.append(t.sink)
            start = stop
        if self.optimizer is not None:
            self.optimizer.params = [flat]

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Work on every core, BLAS one thread in each thread (engine/parallel.py); report the BLAS and the threads."""
        # Process-wide, as pinning is: the threads are the cores this process may use, like torch's default.
        parallel.configure(parallel.cores())
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {}).get("name", "unknown")
        return {"blas": blas, "threads": parallel.threads()}

    @classmethod
    def version(cls) -> str:
        """NumPy's version string."""
        return f"numpy {np.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """The CPU, and cuda when CuPy imports and sees a GPU."""
        try:
            load_cupy()
        except BackendError:
            return ["cpu"]
        return ["cpu", "cuda"]

    def get_params(self) -> Params:
        """Copies of the current parameters, on the host."""
        return {k: self._host(t.data) for k, t in self.params.items()}

    def set_params(self, params: Params) -> None:
        """Copy params in, cast to the backend dtype; arrays keep their identity so optimizer state stays attached."""
        check(self.spec, params)
        for k, t in self.params.items():
            self.xp.copyto(t.data, self.xp.asarray(params[k]), casting="same_kind")

    def get_buffers(self) -> Params:
        """Copies of the running statistics, on the host."""
        return {k: self._host(v) for k, v in self.buffers.items()}

    def set_buffers(self, buffers: Params) -> None:
        """Copy buffers in, cast to the backend dtype."""
        check(self.spec, buffers, "buffers")
        for k, v in self.buffers.items():
            self.xp.copyto(v, self.xp.asarray(buffers[k]), casting="same_kind")

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: draw them from the backend's rng."""
        if masks is not None:
            check_masks(self.spec, masks, len(next(iter(masks.values()))) if masks else 0)
            masks = {k: to_engine(self.xp.asarray(v, dtype=bool)) for k, v in masks.items()}
        self.masks = masks

    def _logits(self, x: np.ndarray, run: Pass) -> Tensor:
        """Run the layers of the spec on an NCHW batch (channels last from here on)."""
        h = Tensor(to_engine(x))
        for op, i, layer, w, b in self._steps:
            h = op(h, i, layer, w, b, run)
        return h

    def _gradients(self, x: np.ndarray, y: np.ndarray, update: bool):
        """A training pass forward and backward: its loss, and the gradients gathered in flat_grad."""
        if split.applies(self, len(x)):
            return self.replicas.step(self, x, y, update)
        return self._whole(x, y, update)

    def _whole(self, x: np.ndarray, y: np.ndarray, update: bool):
        """_gradients in this process alone, the step not split."""
        return self.share(x, y, Pass(True, self.buffers, update, self.masks, self.rng)).data[()]

    def share(self, x: np.ndarray, y: np.ndarray, run: Pass) -> Tensor:
        """Forward and backward over images x (a replica's share, with run.link); the gradients in flat_grad."""
        for t in self.params.values():
            t.zero_grad()
        loss = cross_entropy(self._logits(x, run), y, run.link.images if run.link else None)
        loss.backward()
        for t, g in zip(self.params.values(), self.grad_views):
            if t.grad is not g:  # an op that wrote it into its sink has nothing left to copy
                self.xp.copyto(g, t.grad)
        return loss

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) in evaluation mode, on the host."""
        return self._host(self._logits(self.xp.asarray(x, dtype=self.dtype), Pass(False, self.buffers)).data)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and a copy of every parameter's gradient; parameters and buffers are untouched."""
        x, y = self.prepare_batch(x, y)
        loss = self._gradients(x, y, update=False)
        return float(loss), {k: self._host(g) for k, g in zip(self.params, self.grad_views)}

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh SGD or Adam state over the parameter arrays."""
        if config.name == "sgd":
            self.optimizer = SGD([self.flat], config.lr, config.momentum)
        elif config.name == "adam":
            self.optimizer = Adam([self.flat], config.lr, config.betas, config.eps)
        else:
            raise BackendError(f"backend 'numpy' has no optimizer '{config.name}'; "
                               f"choose one of {', '.join(OPTIMIZERS)}")

    def set_lr(self, lr: float) -> None:
        """New learning rate; moments and velocities are kept."""
        self._require_optimizer().lr = lr

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x in the backend dtype, y as int64, on the device; no copy on the CPU when they already are."""
        return self.xp.asarray(x, dtype=self.dtype), self.xp.asarray(y, dtype=np.int64)

    def train_step(self, batch: tuple[np.ndarray, np.ndarray]) -> np.floating:
        """One forward, backward and update; returns the loss: a NumPy scalar, or a 0-d CuPy array (no sync)."""
        optimizer = self._require_optimizer()
        x, y = batch
        # A diverging run overflows; the harness reports the non-finite loss itself, once.
        with np.errstate(over="ignore", invalid="ignore"):
            if split.applies(self, len(x)):
                return self.replicas.step(self, x, y, True, optimizer)  # the update too, shared by the replicas
            split.share_update(self, optimizer)
            loss = self._whole(x, y, update=True)
        optimizer.step([self.flat_grad])
        return loss

    def synchronize(self) -> None:
        """Wait for CuPy's queued kernels; NumPy runs eagerly, so nothing is queued on the CPU."""
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()

    def helpers_peak_rss_mb(self) -> list[float]:
        """The engine's worker processes' own memory peaks, in MiB: the cell's process does not count them."""
        return parallel.processes_peak_rss_mb()

    def peak_device_memory(self) -> int | None:
        """On cuda, the bytes CuPy's default memory pool holds (its high-water mark); None on the CPU."""
        # The pool keeps freed blocks for reuse and never shrinks unless asked to, so what it holds is
        # at least the peak of live arrays: torch's max_memory_reserved, not max_memory_allocated.
        return None if self.xp is np else int(self.xp.get_default_memory_pool().total_bytes())

    def _host(self, a) -> np.ndarray:
        """A host NumPy copy of a backend array."""
        return a.copy() if self.xp is np else self.xp.asnumpy(a)

    def _require_optimizer(self) -> SGD | Adam:
        if self.optimizer is None:
            raise BackendError("backend 'numpy' has no optimizer yet; call init_optimizer(config) first")
        return self.optimizer


def stored(segment, shape: tuple[int, ...]):
    """A parameter's view of its segment of the flat array: dense weights (in, out) column by column, else rows."""
    # Column by column, a dense layer's weight gradient is g.T @ x, which OpenBLAS runs faster (engine.ops.dense),
    # and it lands in the flat gradient as a plain copy; the (in, out) shape and every value stay canonical.
    return segment.reshape(shape[::-1]).T if len(shape) == 2 else segment.reshape(shape)


def load_cupy():
    """The cupy module, when it imports and sees a GPU; otherwise a one-line BackendError saying what is missing."""
    refused = "backend 'numpy' cannot use device 'cuda'"
    try:
        import cupy
    except Exception as e:  # a broken install or a CUDA library mismatch fails in many ways
        if isinstance(e, ModuleNotFoundError) and e.name == "cupy":
            raise BackendError(f"{refused}: it needs CuPy, which is not installed; "
                               "pip install cupy-cuda12x (match your CUDA version)") from e
        raise BackendError(f"{refused}: CuPy failed to import ({_first_line(e)})") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or CUDA's runtime error: no GPU either way
        raise BackendError(f"{refused}: CuPy sees no GPU ({_first_line(e)})") from e
    if count < 1:
        raise BackendError(f"{refused}: CuPy sees no GPU (0 devices)")
    return cupy


def _first_line(e: Exception) -> str:
    """The first line of an error's message (CuPy's import errors run to a page), or its type's name."""
    return first_line(e) or type(e).__name__


def plan(spec: ModelSpec, params: dict[str, Tensor], fuse: bool = True) -> list[Step]:
    """The steps that run the spec: LOWER's op per layer, the fused ops below in place of the layers they cover."""
    ops, layers = lower(LOWER, spec, "numpy"), spec.layers
    steps, i = [], 0
    while i < len(layers):
        op, j, taken = (_fused(layers, i) if fuse else None) or (ops[i], i, 1)
        steps.append((op, j, layers[j], params.get(f"{j}.weight"), params.get(f"{j}.bias")))
        i += taken
    return steps


def _fused(layers: tuple, i: int) -> tuple[Callable, int, int] | None:
    """(op, index of the layer it is given, layers it covers) for a run from layers[i] with a fused equivalent."""
    def at(j: int, kind: type) -> bool:
        return j < len(layers) and isinstance(layers[j], kind)
    if at(i, Conv2D):
        # conv [activation] [pool [relu]] as one op, slice by slice while each is in cache. A monotone activation
        # before a max pool moves after it (see _AFTER_MAX_POOL; a second relu changes nothing); any other
        # activation before a pool stays before it.
        j, act = i + 1, layers[i + 1] if at(i + 1, (ReLU, Tanh, Sigmoid)) else None
        j += act is not None
        pool = layers[j] if at(j, (MaxPool2D, AvgPool2D)) else None
        if pool is None:
            return (partial(_conv, act=_ACT[type(act)], after=None, pool=None), i, j - i) if act else None
        j += 1
        after = "relu" if at(j, ReLU) else None
        j += after is not None
        movable = isinstance(pool, MaxPool2D) and isinstance(act, _AFTER_MAX_POOL)
        if movable and (after is None or isinstance(act, ReLU)):
            act, after = None, _ACT[type(act)]
        kind = "max" if isinstance(pool, MaxPool2D) else "avg"
        return partial(_conv, act=act and _ACT[type(act)], after=after, pool=(kind, pool.size, pool.step)), i, j - i
    if at(i, Dense) and at(i + 1, ReLU):
        return _dense_relu, i, 2
    if at(i, BatchNorm) and at(i + 1, (ReLU, Tanh, Sigmoid)):
        # The activation on each chunk of batch norm's output while it is in cache, its gradient likewise.
        return partial(_batchnorm, act=_ACT[type(layers[i + 1])]), i, 2
    if at(i, _AFTER_MAX_POOL) and at(i + 1, MaxPool2D):
        return partial(_pool_act, act=layers[i]), i + 1, 2
    return None


_ACT = {ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid"}
# Activations that commute with max pooling: pooling first applies them to an array a quarter of the size or less,
# and keeps nothing at full size. relu: a window's first max is the same either way whenever it is > 0, and the
# gradient is 0 otherwise. tanh never decreases (NumPy's float32 and float64 tanh measured so on 4 M consecutive
# floats around each of 15 points from -20 to 20), so the values are the same; a window's gradient goes to its first
# largest input, where the plain order gives it to its first largest tanh: they differ only where two inputs differ
# yet round to the same tanh, and then the gradient's value is the same, at another cell. sigmoid's rounding is not
# monotone (70,000 steps down in the same sweep), so it stays before the pool.
_AFTER_MAX_POOL = (ReLU, Tanh)


def _conv(h: Tensor, i: int, conv: Conv2D, w: Tensor, b: Tensor, run: Pass, act: str | None, after: str | None,
          pool: tuple[str, int, int] | None) -> Tensor:
    return conv2d(h, w, b, conv.stride, conv.pads(chw(h.shape)), pool=pool, act=act, after=after)


def _dense_relu(h: Tensor, i: int, layer: Dense, w: Tensor, b: Tensor, run: Pass) -> Tensor:
    return dense(h, w, b, relu=True)


def _pool_act(h: Tensor, i: int, pool: MaxPool2D, w: None, b: None, run: Pass, act: ReLU | Tanh) -> Tensor:
    out = maxpool2d(h, pool.size, pool.step)
    return relu(out) if isinstance(act, ReLU) else tanh(out)

"""The spec lowered to PyTorch: an nn.Sequential with one module per spec layer."""
from __future__ import annotations

import os
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode
from fwbench.backends.lowering import lower
from fwbench.backends.torch_modes import CompiledStep, lr_tensor
from fwbench.models.params import Params, check, check_masks
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ModelSpec,
                                 ReLU, Shape, Sigmoid, Tanh)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = ("sgd", "adam")
# eager: plain torch; channels_last: eager in NHWC memory; compile: torch.compile'd step (inductor);
# cudagraphs: torch.compile mode="reduce-overhead", the step replayed as CUDA graphs (GPU only).
MODES = ("eager", "channels_last", "compile", "cudagraphs")


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after explicit zero padding: "same" with an even kernel pads one pixel more at the end."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 pads: tuple[int, int, int, int]):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        top, bottom, left, right = pads
        self.pads = (left, right, top, bottom)  # F.pad's order: the last axis first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


class MaskedDropout(nn.Dropout):
    """nn.Dropout; with `mask` set (the harness's keep-mask in the model dtype), x * mask / (1 - p) instead."""

    mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.mask is not None:
            # The scaled mask first, then one product: torch's own dropout computes it so (noise.div_(1 - p)).
            return x * (self.mask / (1 - self.p))
        return super().forward(x)


def conv2d(layer: Conv2D, shape: Shape) -> nn.Conv2d:
    """Stock nn.Conv2d when the padding is the same on every side (torch's padding= is symmetric), else padded."""
    pads = layer.pads(shape)
    if len(set(pads)) == 1:
        return nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, stride=layer.stride, padding=pads[0])
    return PaddedConv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, pads)


def batchnorm(layer: BatchNorm, shape: Shape) -> nn.Module:
    """BatchNorm2d on a (C, H, W) input, BatchNorm1d on an (F,) one; torch's momentum is the spec's."""
    kind = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return kind(shape[0], eps=layer.eps, momentum=layer.momentum)


# Layer type -> module(layer, shape it receives); built in layer order, so a seed gives the same weights.
MODULES: dict[type, Callable[[Layer, Shape], nn.Module]] = {
    Conv2D: conv2d,
    ReLU: lambda layer, shape: nn.ReLU(),
    MaxPool2D: lambda layer, shape: nn.MaxPool2d(layer.size, stride=layer.step),
    Flatten: lambda layer, shape: nn.Flatten(),  # NCHW flattens in C, H, W order: already canonical
    Dense: lambda layer, shape: nn.Linear(shape[0], layer.units),
    Tanh: lambda layer, shape: nn.Tanh(),
    Sigmoid: lambda layer, shape: nn.Sigmoid(),
    AvgPool2D: lambda layer, shape: nn.AvgPool2d(layer.size, stride=layer.step),
    BatchNorm: batchnorm,
    Dropout: lambda layer, shape: MaskedDropout(layer.rate),
}


def build(spec: ModelSpec) -> nn.Sequential:
    """One module per spec layer, so module index == layer index == canonical key prefix."""
    makers = lower(MODULES, spec, "torch")
    return nn.Sequential(*(make(layer, spec.input_of(i)) for i, (make, layer) in enumerate(zip(makers, spec.layers))))


def to_native(params: Params) -> Params:
    """Canonical -> torch layout: nn.Linear stores (out, in); conv is already (out, in, kh, kw)."""
    return {k: v.T if v.ndim == 2 else v for k, v in params.items()}


def from_native(native: Params) -> Params:
    """Torch layout -> canonical; the same for parameters and gradients."""
    return {k: np.array(v.T if v.ndim == 2 else v) for k, v in native.items()}


class TorchBackend(Backend):
    """PyTorch with torch.optim optimizers, in one of MODES."""

    name = "torch"
    framework = "torch"
    UNSUPPORTED_LAYERS = frozenset()  # MODULES covers every layer type
    modes = MODES
    MODE_NOTES: ClassVar[dict[str, str]] = {
        "eager": "stock torch.nn and torch.optim, one Python step per batch",
        "channels_last": "eager with the model and batches in torch.channels_last memory format",
        "compile": "torch.compile of forward+loss and of the optimizer step; fwbench passes the lr as a 0-d tensor "
                   "and creates Adam's state up front with a float64 step, so the compiled step neither recompiles "
                   "nor computes the bias corrections in float32 (as a stock compiled Adam does)",
        "cudagraphs": "compile in reduce-overhead mode (CUDA graphs), one graph per batch size; CUDA only",
    }

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Build the model; params=None asks for torch's default initialiser, seeded."""
        self.mode = check_mode(type(self), mode)
        if self.mode == "cudagraphs" and device != "cuda":
            raise BackendError(f"torch@cudagraphs needs --device cuda: CUDA graphs have nothing to capture on '{device}'")
        check_device(type(self), device)
        if dtype not in DTYPES:
            raise BackendError(f"torch backend: unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        # Full-precision float32 matmuls/convs on GPU, as the NumPy and JAX backends compute.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        self.spec, self.dtype, self.device = spec, DTYPES[dtype], device
        self._dev = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.model = build(spec)
        # Evaluation until a training pass asks otherwise (_train): batch norm and dropout tell the two apart.
        self.model.to(device=self._dev, dtype=self.dtype).eval()
        # Conv weights and 4-d inputs in NHWC order; the canonical layout is unchanged at the boundary.
        self._format = torch.channels_last if self.mode == "channels_last" else torch.contiguous_format
        self.model.to(memory_format=self._format)
        self.named = dict(self.model.named_parameters())  # "{i}.weight" / "{i}.bias"
        assert set(self.named) == set(spec.param_shapes()), sorted(self.named)
        # "{i}.running_mean" / "{i}.running_var"; batch norm's num_batches_tracked is torch's own (unused with a
        # momentum), so it stays out of the canonical buffers.
        self.buffers = {k: b for k, b in self.model.named_buffers() if k in spec.buffer_shapes()}
        assert set(self.buffers) == set(spec.buffer_shapes()), sorted(self.buffers)
        self.dropouts = {f"{i}.mask": m for i, m in enumerate(self.model) if isinstance(m, MaskedDropout)}
        self.opt: torch.optim.Optimizer | None = None
        self._compiled: CompiledStep | None = None  # compile/cudagraphs: built on the first train_step
        if params is not None:
            self.set_params(params)

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """TF32 off, deterministic kernels, no cuDNN autotuning."""
        # cuBLAS needs this workspace setting before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
        return {"tf32": False, "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cudnn_benchmark": torch.backends.cudnn.benchmark, "threads": torch.get_num_threads()}

    @classmethod
    def version(cls) -> str:
        """Version string of torch."""
        return f"torch {torch.__version__}"

    @classmethod
    def devices(cls) -> list[str]:
        """CPU, plus CUDA when a GPU is visible."""
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        return from_native({k: _host(p) for k, p in self.named.items()})

    def set_params(self, params: Params) -> None:
        """Replace the parameters (in place, so optimizer state keeps pointing at them)."""
        check(self.spec, params)
        native = to_native(params)
        with torch.no_grad():
            for k, p in self.named.items():
                value = torch.from_numpy(np.ascontiguousarray(native[k]))
                assert value.shape == p.shape, f"'{k}': {tuple(value.shape)} vs native {tuple(p.shape)}"
                p.copy_(value)  # copy_ casts to the backend dtype and device

    def get_buffers(self) -> Params:
        """Batch norm's running statistics in canonical layout, as host copies."""
        return {k: np.array(_host(b)) for k, b in self.buffers.items()}

    def set_buffers(self, buffers: Params) -> None:
        """Replace the running statistics in place, cast to the backend dtype."""
        check(self.spec, buffers, "buffers")
        with torch.no_grad():
            for k, b in self.buffers.items():
                b.copy_(torch.from_numpy(np.ascontiguousarray(buffers[k])))

    def set_masks(self, masks: Params | None) -> None:
        """The harness's keep-masks for every training pass from now on; None: torch's own dropout and RNG."""
        if masks is not None:
            check_masks(self.spec, masks, len(next(iter(masks.values()))) if masks else 0)
        # compile/cudagraphs: a compiled step guards on `mask is None`, so switching between masks and torch's own
        # dropout compiles once more each way; new masks of the same shape do not. They are copied into the
        # tensor already there: torch.compile takes a module's tensor attribute as a static input, whose address
        # a CUDA graph records, so a new tensor every step would make cudagraphs record the step again.
        for k, module in self.dropouts.items():
            mask = None if masks is None else self._x(np.asarray(masks[k]))
            if mask is not None and module.mask is not None and module.mask.shape == mask.shape:
                module.mask.copy_(mask)
            else:
                module.mask = None if mask is None else self._dynamic(mask)

    def _x(self, x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self._dev, self.dtype)
        return x.contiguous(memory_format=self._format) if x.ndim == 4 else x

    def _dynamic(self, t: torch.Tensor) -> torch.Tensor:
        """t with its batch dimension marked dynamic in compile mode (see prepare_batch)."""
        if self.mode == "compile" and len(t) > 1:  # size 1 is always specialised; marking it would raise
            torch._dynamo.mark_dynamic(t, 0)
        return t

    def _train(self, training: bool) -> None:
        """Training or evaluation mode; flipped only on a change, as the compiled step guards on it."""
        if self.model.training != training:
            self.model.train(training)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x in evaluation mode, as a host array."""
        self._train(False)
        with torch.no_grad():
            return self.model(self._x(x)).cpu().numpy()

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; .grad cleared, buffers as they were."""
        self._train(True)
        saved = {k: b.clone() for k, b in self.model.named_buffers()}  # num_batches_tracked too
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self._x(x)), torch.from_numpy(np.asarray(y)).to(self._dev, torch.long))
        loss.backward()
        grads = from_native({k: _host(p.grad) for k, p in self.named.items()})
        self.model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(saved[k])
        return loss.item(), grads

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Fresh torch.optim state; torch.optim's rules are the protocol's definition."""
        params = list(self.model.parameters())
        compiled = self.mode in ("compile", "cudagraphs")
        lr = lr_tensor(config.lr, self._dev) if compiled else config.lr
        # cudagraphs: state and step count stay on the GPU, so a captured update never reads the host. compile on
        # cuda too: torch.compile sets it itself for an optimizer without state, but prime_state creates the
        # state before the first compiled step.
        graphable = {"capturable": True} if compiled and self._dev.type == "cuda" else {}
        if config.name == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum)
        elif config.name == "adam":
            self.opt = torch.optim.Adam(params, lr=lr, betas=tuple(config.betas), eps=config.eps, **graphable)
        else:
            raise BackendError(f"torch backend: unknown optimizer '{config.name}'; choose one of {', '.join(OPTIMIZERS)}")
        self._compiled = None  # the compiled update traced the old optimizer: trace the new one

    def set_lr(self, lr: float) -> None:
        """Change the learning rate in place; momentum/moment buffers are kept."""
        for group in self._optimizer().param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # in place: compiled steps read it, and guard only on its metadata
            else:
                group["lr"] = lr

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """x in the backend dtype and memory format and int64 labels, on the device."""
        # One graph for every batch size: the epoch's ragged last batch reuses it instead of compiling again.
        return self._dynamic(self._x(x)), self._dynamic(torch.from_numpy(np.asarray(y)).to(self._dev, torch.long))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One update; returns the loss as a device tensor, so no host sync happens here."""
        opt = self._optimizer()
        x, y = batch
        self._train(True)
        if self.mode in ("compile", "cudagraphs"):
            if self._compiled is None:  # lazily, so the harness counts compilation in the first step
                self._compiled = CompiledStep(self.model, opt, self.mode)
            return self._compiled(x, y)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    def peak_device_memory(self) -> int | None:
        """torch's max_memory_allocated on cuda."""
        return torch.cuda.max_memory_allocated(self._dev) if self._dev.type == "cuda" else None

    def synchronize(self) -> None:
        """Wait for queued CUDA kernels; CPU work is already done when calls return."""
        if self._dev.type == "cuda":
            torch.cuda.synchronize(self._dev)

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.opt is None:
            raise BackendError("torch backend: call init_optimizer() before training")
        return self.opt


def _host(t: torch.Tensor) -> np.ndarray:
    """A host array in C order (channels_last tensors are NHWC in memory); from_native copies it."""
    return t.detach().cpu().contiguous().numpy()

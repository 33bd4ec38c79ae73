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
from fwbench.models.params import Params, check
from fwbench.models.spec import Conv2D, Dense, Flatten, Layer, MaxPool2D, ModelSpec, ReLU, Shape, Sigmoid, Tanh

DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = ("sgd", "adam")
# eager: plain torch; channels_last: eager in NHWC memory; compile: torch.compile'd step (inductor);
# cudagraphs: torch.compile mode="reduce-overhead", the step replayed as CUDA graphs (GPU only).
MODES = ("eager", "channels_last", "compile", "cudagraphs")
# Layer type -> module(layer, shape it receives); built in layer order, so a seed gives the same weights.
MODULES: dict[type, Callable[[Layer, Shape], nn.Module]] = {
    Conv2D: lambda layer, shape: nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size,
                                           stride=layer.stride, padding=layer.padding),
    ReLU: lambda layer, shape: nn.ReLU(),
    MaxPool2D: lambda layer, shape: nn.MaxPool2d(layer.size, stride=layer.step),
    Flatten: lambda layer, shape: nn.Flatten(),  # NCHW flattens in C, H, W order: already canonical
    Dense: lambda layer, shape: nn.Linear(shape[0], layer.units),
    Tanh: lambda layer, shape: nn.Tanh(),
    Sigmoid: lambda layer, shape: nn.Sigmoid(),
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
        self.model.to(device=self._dev, dtype=self.dtype).eval()  # no dropout/batchnorm: mode is moot
        # Conv weights and 4-d inputs in NHWC order; the canonical layout is unchanged at the boundary.
        self._format = torch.channels_last if self.mode == "channels_last" else torch.contiguous_format
        self.model.to(memory_format=self._format)
        self.named = dict(self.model.named_parameters())  # "{i}.weight" / "{i}.bias"
        assert set(self.named) == set(spec.param_shapes()), sorted(self.named)
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

    def _x(self, x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self._dev, self.dtype)
        return x.contiguous(memory_format=self._format) if x.ndim == 4 else x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x, as a host array."""
        with torch.no_grad():
            return self.model(self._x(x)).cpu().numpy()

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and canonical gradients; leaves .grad cleared."""
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self._x(x)), torch.from_numpy(np.asarray(y)).to(self._dev, torch.long))
        loss.backward()
        grads = from_native({k: _host(p.grad) for k, p in self.named.items()})
        self.model.zero_grad(set_to_none=True)
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
        x, y = self._x(x), torch.from_numpy(np.asarray(y)).to(self._dev, torch.long)
        if self.mode == "compile" and len(x) > 1:  # size 1 is always specialised; marking it would raise
            # One graph for every batch size: the epoch's ragged last batch reuses it instead of compiling again.
            torch._dynamo.mark_dynamic(x, 0)
            torch._dynamo.mark_dynamic(y, 0)
        return x, y

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One update; returns the loss as a device tensor, so no host sync happens here."""
        opt = self._optimizer()
        x, y = batch
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

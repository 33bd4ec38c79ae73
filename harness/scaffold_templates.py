"""The files `fwbench new-backend NAME` writes, as string.Template texts ($name, $dist, $package, $cls)."""
from __future__ import annotations

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "An fwbench backend: $name."
readme = "README.md"
requires-python = ">=3.11"
# Your framework goes here, e.g. "jax>=0.4.30". fwbench itself is the host environment.
dependencies = []

# This entry point is how fwbench finds the backend: name = "module:Class" in its group.
[project.entry-points."fwbench.backends"]
$name = "$package:$cls"

[tool.setuptools]
packages = ["$package"]
'''

BACKEND = '''\
"""fwbench backend '$name': each method says what to implement; `fwbench conformance $name` checks it."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

# What an implementation needs; unused until the methods are filled in.
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device, check_mode
from fwbench.backends.lowering import lower
from fwbench.models.params import Params, check, check_masks, init_buffers, init_params
from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ModelSpec, ReLU,
                                 Sigmoid, Tanh)

# Canonical layout, the only one that crosses the boundary (parameters, gradients, buffers, masks):
# keys "{i}.weight" and "{i}.bias", i the layer's index in spec.layers; conv weight (out, in, kh, kw),
# dense weight (in, out); activations NCHW, flatten in C, H, W order. Batch norm's buffers
# "{i}.running_mean" and "{i}.running_var" are (C,) or (F,); dropout's keep-masks "{i}.mask" are bool
# (N, *spec.input_of(i)), NCHW. Convert in one place.
# Modes: forward() is evaluation (running statistics, no dropout); loss_and_grads() a training pass (batch
# statistics, dropout) that changes nothing; train_step() a training pass that updates parameters and buffers.
# The whole contract, method by method: docs/adding-a-backend.md in fwbench.

# Layer fields (fwbench.models.spec; frozen dataclasses), shape being the (C, H, W) or (F,) input of the layer:
#   Conv2D      out_channels, kernel_size, stride, padding (an int, or "same"): always use
#               layer.pads(shape) -> (top, bottom, left, right); "same" puts the odd pixel at the end
#   ReLU        no fields
#   MaxPool2D   size, stride (None means size): use layer.step; VALID windows
#   Flatten     no fields
#   Dense       units
#   Tanh        no fields
#   Sigmoid     no fields
#   AvgPool2D   size, stride (None means size): use layer.step; VALID windows
#   BatchNorm   eps, momentum (PyTorch's: running = (1 - momentum) * running + momentum * batch statistic)
#   Dropout     rate (the probability of zeroing a unit)
# spec.input_of(i) is the shape layer i receives, spec.shapes[i] the one it gives (batch left out).


def todo(what: str) -> Callable:
    """A stand-in op that says what the real one computes."""
    def op(x, i, layer, w, b, run):
        raise NotImplementedError(f"$name: implement the op for {what}")
    return op


# Layer type -> op(x, i, layer, w, b, run) in your framework: layer i (its keys "{i}.weight", "{i}.running_mean",
# "{i}.mask"), w and b its parameters (None for a layer without), run your record of the pass (training or
# evaluation, the buffers, the masks). The signature is yours. lower(LAYERS, spec, "$name") gives each layer's op
# in order and refuses, with BackendError, a type missing here; list such types in UNSUPPORTED_LAYERS and the
# conformance kit marks them "not supported".
LAYERS: dict[type, Callable] = {
    Conv2D: todo("conv2d: cross-correlation with w (out, in, kh, kw), strides layer.stride, zero padding "
                 "layer.pads(shape) = (top, bottom, left, right) of the (C, H, W) input, plus b"),
    ReLU: todo("relu: max(x, 0), with relu'(0) = 0"),
    MaxPool2D: todo("maxpool2d: max over VALID layer.size x layer.size windows, layer.step apart"),
    Flatten: todo("flatten: (N, C, H, W) -> (N, C * H * W), in C, H, W order"),
    Dense: todo("dense: x @ w + b, w stored (in, out)"),
    Tanh: todo("tanh: elementwise tanh(x)"),
    Sigmoid: todo("sigmoid: elementwise 1 / (1 + exp(-x))"),
    AvgPool2D: todo("avgpool2d: mean over VALID layer.size x layer.size windows, layer.step apart "
                    "(the window's sum divided by size * size)"),
    BatchNorm: todo("batchnorm: per channel of NCHW x (per feature of (N, F) x), (x - mean) / sqrt(var + layer.eps) "
                    "* w + b; training: the batch mean and biased variance, and a train step moves the running "
                    "statistics by layer.momentum, the variance unbiased there; evaluation: the running statistics"),
    Dropout: todo("dropout: training: x * keep / (1 - layer.rate), keep the harness's mask '{i}.mask' when "
                  "set_masks gave one, else your framework's own draws; evaluation: x unchanged"),
}


class $cls(Backend):
    """The spec lowered to <your framework>."""

    name = "$name"
    framework = "<your framework>"
    UNSUPPORTED_LAYERS = frozenset()  # the layer types LAYERS leaves out, e.g. frozenset({"maxpool2d"})
    # Execution modes, the default first, each benchmarked as its own row ("$name@MODE"); () for none. With modes,
    # say in MODE_NOTES what each changes from stock framework code, e.g. {"eager": "...", "compile": "..."}.
    modes: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0, mode: str | None = None):
        """Build the model in `mode` (None: the default); params=None asks for the framework's own initialiser."""
        raise NotImplementedError(
            "$name: implement __init__: call check_device(type(self), device) and self.mode = check_mode(type(self), "
            "mode) (the harness passes mode= only when a user names one); accept dtype 'float32' and "
            "'float64' (anything else: BackendError); take each layer's op with lower(LAYERS, spec, '$name') "
            "(it refuses a type LAYERS lacks); then set_params(params), or when params is None "
            "your framework's own init seeded by seed (init_params(spec, seed, dtype) if it has none)")

    @classmethod
    def version(cls) -> str:
        """Version string of the framework."""
        raise NotImplementedError("$name: implement version(): return e.g. f'myfw {myfw.__version__}'")

    @classmethod
    def devices(cls) -> list[str]:
        """Devices usable right now."""
        raise NotImplementedError(
            "$name: implement devices(): return ['cpu'], plus 'cuda' when the framework sees a GPU now")

    @classmethod
    def pin_numerics(cls) -> dict[str, object]:
        """Pin full-precision, deterministic settings for the whole process, every mode alike; return them."""
        raise NotImplementedError(
            "$name: implement pin_numerics(): turn off TF32 / reduced-precision matmuls and nondeterministic "
            "kernels, and return the settings now in force as a dict ({} if there is nothing to pin)")

    def get_params(self) -> Params:
        """Current parameters in canonical layout, as host NumPy arrays."""
        raise NotImplementedError(
            "$name: implement get_params(): return fresh host np.ndarray copies keyed '{i}.weight' / '{i}.bias' "
            "with spec.param_shapes()'s shapes: conv (out, in, kh, kw), dense (in, out), in the backend dtype")

    def set_params(self, params: Params) -> None:
        """Replace the parameters from canonical layout."""
        raise NotImplementedError(
            "$name: implement set_params(params): check(self.spec, params), convert from canonical layout and "
            "copy in (never alias the caller's arrays); keep any optimizer state")

    def get_buffers(self) -> Params:
        """Current buffers (batch norm's running statistics) in canonical layout, as host copies; {} when none."""
        raise NotImplementedError(
            "$name: implement get_buffers(): return fresh host np.ndarray copies keyed '{i}.running_mean' / "
            "'{i}.running_var' with spec.buffer_shapes()'s shapes ({} for a spec without batch norm); they start "
            "as init_buffers(spec, dtype): mean 0, variance 1")

    def set_buffers(self, buffers: Params) -> None:
        """Replace the buffers from canonical layout."""
        raise NotImplementedError(
            "$name: implement set_buffers(buffers): check(self.spec, buffers, 'buffers'), convert and copy in "
            "(never alias the caller's arrays)")

    def set_masks(self, masks: Params | None) -> None:
        """Dropout keep-masks for every training pass from now on; None: the framework's own draws."""
        raise NotImplementedError(
            "$name: implement set_masks(masks): keep the harness's keep-masks, '{i}.mask' -> bool "
            "(N, *spec.input_of(i)) NCHW (check_masks(self.spec, masks, N)), and drop exactly those units in every "
            "training pass until the next call; None: your framework's own random draws again")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x in evaluation mode, as a host array."""
        raise NotImplementedError(
            "$name: implement forward(x): x is NCHW (N, C, H, W) float; return logits (N, classes) "
            "as a host np.ndarray in the backend dtype, in evaluation mode (batch norm's running statistics, "
            "no dropout); no update")

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Training-mode mean cross-entropy and canonical gradients; parameters and buffers unchanged."""
        raise NotImplementedError(
            "$name: implement loss_and_grads(x, y): y is (N,) integer labels; a pass in training mode (batch "
            "statistics, dropout with the set_masks masks); return (mean softmax cross-entropy as a float, "
            "gradients with get_params()'s keys, shapes and layout); parameters and buffers unchanged")

    def init_optimizer(self, config: OptimizerConfig) -> None:
        """Create fresh optimizer state for the current parameters."""
        raise NotImplementedError(
            "$name: implement init_optimizer(config): fresh state for 'sgd' (v = momentum * v + g; p -= lr * v) "
            "or 'adam' (torch.optim.Adam: p -= lr * mhat / (sqrt(vhat) + eps)); any other name: BackendError")

    def set_lr(self, lr: float) -> None:
        """Change the learning rate without resetting optimizer state."""
        raise NotImplementedError(
            "$name: implement set_lr(lr): the next steps use lr; keep momentum and moments, do not recompile "
            "(pass lr as an argument, not a constant); BackendError before init_optimizer")

    def prepare_batch(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Move one batch to the device in native form; kept out of timed regions."""
        raise NotImplementedError(
            "$name: implement prepare_batch(x, y): x (N, C, H, W) and y (N,) on the device, in the native "
            "layout and dtype, ready for train_step; return (x, y) unchanged if NumPy arrays will do")

    def train_step(self, batch: Any) -> Any:
        """One training-mode forward, backward, optimizer update and buffer update; returns the loss."""
        raise NotImplementedError(
            "$name: implement train_step(batch): one forward, backward and update on a prepare_batch() result, "
            "in training mode, updating batch norm's running statistics too; return the loss as something "
            "float() reads later, without forcing a host sync here")

    def synchronize(self) -> None:
        """Block until all queued device work is done."""
        raise NotImplementedError(
            "$name: implement synchronize(): return only when every queued step has finished, so a timer read "
            "right after measures the work (e.g. jax.block_until_ready, torch.cuda.synchronize; eager CPU: pass)")

    def peak_device_memory(self) -> int | None:
        """Bytes the framework allocated at most on the GPU so far; None on the CPU."""
        raise NotImplementedError(
            "$name: implement peak_device_memory(): the framework's peak GPU bytes so far, or None on the CPU")
'''

README = '''\
# $dist

An fwbench backend named `$name`, generated by `fwbench new-backend $name`.

Every method of `$cls` in `$package/__init__.py` raises `NotImplementedError` saying what it must
do; fwbench's `docs/adding-a-backend.md` has the whole contract.

```sh
pip install -e .                  # into the environment that has fwbench
fwbench backends                  # lists $name with source "plugin $dist 0.1.0"
fwbench conformance $name         # the conformance kit: layers, gradients, optimizers, ties, devices
pytest tests                      # the same kit from pytest
fwbench bench --suite quick --backends numpy,$name
fwbench report
```
'''

TEST = '''\
"""The fwbench conformance kit against this backend: layers, gradients, optimizers, ties and devices."""
import pytest

from fwbench.harness.conformance import run_conformance


def test_backend_passes_the_conformance_kit(request):
    if request.config.getoption("fwbench_backend", default=None):
        pytest.skip("--fwbench-backend runs the same kit, one test per check")
    report = run_conformance("$name", "cpu")
    failed = [f"{c['name']}: {c.get('detail', '')}" for c in report["checks"] if c["status"] == "fail"]
    assert report["passed"], "\\n".join(failed)
'''

# Relative path inside the package folder -> template.
FILES = {"pyproject.toml": PYPROJECT, "README.md": README, "$package/__init__.py": BACKEND,
         "tests/test_conformance.py": TEST}

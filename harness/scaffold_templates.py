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
from fwbench.backends.base import Backend, BackendError, OptimizerConfig, check_device
from fwbench.backends.lowering import lower
from fwbench.models.params import Params, check, init_params
from fwbench.models.spec import Conv2D, Dense, Flatten, MaxPool2D, ModelSpec, ReLU, Sigmoid, Tanh

# Canonical layout, the only one that crosses the boundary (get_params, set_params, loss_and_grads):
# keys "{i}.weight" and "{i}.bias", i the layer's index in spec.layers; conv weight (out, in, kh, kw),
# dense weight (in, out); activations NCHW, flatten in C, H, W order. Convert in one place.
# The whole contract, method by method: docs/adding-a-backend.md in fwbench.


def todo(what: str) -> Callable:
    """A stand-in op that says what the real one computes."""
    def op(x, layer, w, b):
        raise NotImplementedError(f"$name: implement the op for {what}")
    return op


# Layer type -> op(x, layer, w, b) in your framework, w and b the layer's parameters (None for a layer
# without). lower(LAYERS, spec, "$name") gives each layer's op in order and refuses, with BackendError, a
# type missing here; list such types in UNSUPPORTED_LAYERS and the conformance kit marks them "not supported".
LAYERS: dict[type, Callable] = {
    Conv2D: todo("conv2d: cross-correlation with w (out, in, kh, kw), strides layer.stride, "
                 "zero padding layer.padding on each side, plus b"),
    ReLU: todo("relu: max(x, 0), with relu'(0) = 0"),
    MaxPool2D: todo("maxpool2d: max over VALID layer.size x layer.size windows, layer.step apart"),
    Flatten: todo("flatten: (N, C, H, W) -> (N, C * H * W), in C, H, W order"),
    Dense: todo("dense: x @ w + b, w stored (in, out)"),
    Tanh: todo("tanh: elementwise tanh(x)"),
    Sigmoid: todo("sigmoid: elementwise 1 / (1 + exp(-x))"),
}


class $cls(Backend):
    """The spec lowered to <your framework>."""

    name = "$name"
    framework = "<your framework>"
    UNSUPPORTED_LAYERS = frozenset()  # the layer types LAYERS leaves out, e.g. frozenset({"maxpool2d"})

    def __init__(self, spec: ModelSpec, params: Params | None = None, *,
                 device: str = "cpu", dtype: str = "float32", seed: int = 0):
        """Build the model; params=None asks for the framework's own initialiser, seeded."""
        raise NotImplementedError(
            "$name: implement __init__: call check_device(type(self), device); accept dtype 'float32' and "
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
        """Pin full-precision, deterministic settings; return what is in force."""
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for NCHW input x, as a host array."""
        raise NotImplementedError(
            "$name: implement forward(x): x is NCHW (N, C, H, W) float; return logits (N, classes) "
            "as a host np.ndarray in the backend dtype; no update")

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        """Mean cross-entropy and canonical gradients at the current parameters; no update."""
        raise NotImplementedError(
            "$name: implement loss_and_grads(x, y): y is (N,) integer labels; return (mean softmax "
            "cross-entropy as a float, gradients with get_params()'s keys, shapes and layout); parameters unchanged")

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
        """One forward, backward and optimizer update; returns the loss (float() reads it)."""
        raise NotImplementedError(
            "$name: implement train_step(batch): one forward, backward and update on a prepare_batch() result; "
            "return the loss as something float() reads later, without forcing a host sync here")

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

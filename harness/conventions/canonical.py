"""fwbench's own semantics, as the probes see a framework: the NumPy engine's ops at the spec's defaults."""
from __future__ import annotations

import numpy as np

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.engine import SGD, Adam, Tensor, avgpool2d, batchnorm as engine_batchnorm, conv2d
from fwbench.backends.engine import dropout as engine_dropout
from fwbench.backends.engine.layout import to_canonical, to_engine
from fwbench.harness.conventions.probes import Refused
from fwbench.models.params import dropout_masks
from fwbench.models.spec import AvgPool2D, BatchNorm, Conv2D, Dense

ADAM = "engine Adam"  # the reference of the Adam drift


def version() -> str:
    """What computes the canonical column."""
    return f"fwbench NumPy engine (numpy {np.__version__})"


def batchnorm(x: np.ndarray, momentum: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training pass of a fresh spec batchnorm layer: (y, running_mean, running_var)."""
    layer = BatchNorm() if momentum is None else BatchNorm(momentum=momentum)
    y, running = _batchnorm(layer, x, _fresh(layer, x))
    return y, *running


def _fresh(layer: BatchNorm, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer's starting buffers (running mean, running variance) in x's dtype."""
    buffers = layer.initial_buffers(x.shape[1:])
    return buffers["running_mean"].astype(x.dtype), buffers["running_var"].astype(x.dtype)


def _batchnorm(layer: BatchNorm, x: np.ndarray, running: tuple[np.ndarray, np.ndarray]):
    """(y, running) after a training pass, the running buffers updated in place."""
    params = {k: Tensor(v.astype(x.dtype)) for k, v in layer.initial_params(x.shape[1:], None).items()}
    y = engine_batchnorm(Tensor(to_engine(x)), params["weight"], params["bias"], layer.eps, running, True,
                         layer.momentum)
    return to_canonical(y.data), running


def avgpool(x: np.ndarray, size: int, stride: int | None, padding: int) -> np.ndarray:
    """The spec's avgpool2d; it has no padding."""
    if padding:
        raise Refused("avgpool2d has VALID windows only")
    return to_canonical(avgpool2d(Tensor(to_engine(x)), size, AvgPool2D(size, stride).step).data)


def conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """One-channel conv2d with padding "same", padded as the spec's Conv2D.pads says."""
    pads = Conv2D(out_channels=1, kernel_size=w.shape[0], stride=stride, padding="same").pads(x.shape[1:])
    return to_canonical(conv2d(Tensor(to_engine(x)), Tensor(w[None, None]), Tensor(np.zeros(1, x.dtype)), stride,
                               pads).data)


def adam(g: float, eps: float | None = None, eps_root: float | None = None) -> float:
    """One step of the engine's Adam at lr 1 from p = 0, at OptimizerConfig's betas and eps; the change in p."""
    if eps_root is not None:
        raise Refused("the engine's Adam has no eps_root")
    config = OptimizerConfig()
    p = np.zeros(1, np.float32)
    Adam([p], 1.0, config.betas, config.eps if eps is None else eps).step([np.array([g], np.float32)])
    return float(p[0])


def sgd(lrs: list[float], g: float, momentum: float) -> list[float]:
    """p after each step of the engine's SGD with momentum from p = 0, its lr set as the numpy backend sets it."""
    p = np.zeros(1, np.float32)
    opt = SGD([p], lrs[0], momentum)
    out = []
    for lr in lrs:
        opt.lr = lr
        opt.step([np.array([g], np.float32)])
        out.append(float(p[0]))
    return out


def init(kind: str, fan_in: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the spec's initialiser for a dense layer, or a 3 x 3 conv, with `units` outputs."""
    layer, shape = (Dense(units), (fan_in,)) if kind == "dense" else (Conv2D(units, 3), (fan_in // 9, 3, 3))
    params = layer.initial_params(shape, np.random.default_rng(0))
    return params["weight"], params["bias"]


def dropout(x: np.ndarray, rate: float, seed: int | None, calls: int) -> list[np.ndarray]:
    """The engine's dropout under the harness's masks for steps 0, 1, ... of `seed`."""
    if seed is None:
        raise Refused("the harness derives every mask from (seed, step, layer)")
    spec = models.parse({"name": "dropout-probe", "input": list(x.shape[1:]), "classes": 2, "layers": [
        {"type": "dropout", "rate": rate}, {"type": "flatten"}, {"type": "dense", "units": 2}]})
    return [engine_dropout(Tensor(x), dropout_masks(spec, seed, step, len(x))["0.mask"], rate).data
            for step in range(calls)]


def running_stats(weight: np.ndarray, bias: np.ndarray, batches: list[np.ndarray],
                  momentum: None = None) -> tuple[np.ndarray, np.ndarray]:
    """Running (mean, variance) of a default batchnorm after a VALID conv, one training pass a batch, in float64."""
    layer = BatchNorm()
    w, b = Tensor(np.asarray(weight, np.float64)), Tensor(np.asarray(bias, np.float64))
    running = (np.zeros(len(b.data)), np.ones(len(b.data)))
    for x in batches:
        _batchnorm(layer, to_canonical(conv2d(Tensor(to_engine(np.asarray(x, np.float64))), w, b).data), running)
    return running


def adam_quadratic(p0: np.ndarray, curvature: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """p after `steps` of the engine's Adam (OptimizerConfig's defaults) on sum(curvature p^2) / 2, in float32."""
    config = OptimizerConfig()
    p, a = np.array(p0, np.float32), np.asarray(curvature, np.float32)
    opt = Adam([p], lr, config.betas, config.eps)
    for _ in range(steps):
        opt.step([a * p])
    return p

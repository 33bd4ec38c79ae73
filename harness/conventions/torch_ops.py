"""PyTorch's ops as its users call them, at its defaults, for the probes and the drifts."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from fwbench.harness.conventions.probes import Refused

# Native batch-norm settings run for the drift, label -> momentum (None: the default).
BN_SETTINGS = {"nn.BatchNorm2d()": None}
ADAM = "torch.optim.Adam(lr=lr)"  # the Adam the drift runs


def version() -> str:
    """torch's version."""
    return f"torch {torch.__version__}"


def _momentum(momentum: float | None) -> dict:
    """The momentum keyword, or none, so that the default is torch's own."""
    return {} if momentum is None else {"momentum": momentum}


def batchnorm(x: np.ndarray, momentum: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training-mode call of a fresh nn.BatchNorm2d: (y, running_mean, running_var)."""
    bn = torch.nn.BatchNorm2d(x.shape[1], **_momentum(momentum))
    with torch.no_grad():
        y = bn(torch.from_numpy(x))
    return y.numpy(), bn.running_mean.numpy(), bn.running_var.numpy()


def avgpool(x: np.ndarray, size: int, stride: int | None, padding: int) -> np.ndarray:
    """nn.AvgPool2d, its stride left out when None."""
    pool = torch.nn.AvgPool2d(size, padding=padding) if stride is None else torch.nn.AvgPool2d(size, stride, padding)
    return pool(torch.from_numpy(x)).numpy()


def conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """nn.Conv2d(padding="same") with one channel, the kernel w and no bias."""
    try:
        layer = torch.nn.Conv2d(1, 1, w.shape[0], stride=stride, padding="same", bias=False)
    except ValueError as e:
        raise Refused(str(e)) from None
    with torch.no_grad(), warnings.catch_warnings():
        # That an even kernel costs a padded copy of the input is no convention, and not this table's business.
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel", UserWarning)
        layer.weight.copy_(torch.from_numpy(w)[None, None])
        return layer(torch.from_numpy(x)).numpy()


def adam(g: float, **options) -> float:
    """One torch.optim.Adam step at lr 1 from p = 0 with gradient g; the change in p."""
    if "eps_root" in options:
        raise Refused("torch.optim.Adam has no eps_root")
    p = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0, **options)
    p.grad = torch.tensor([g], dtype=torch.float32)
    opt.step()
    return p.item()


def sgd(lrs: list[float], g: float, momentum: float) -> list[float]:
    """p after each torch.optim.SGD(momentum=momentum) step from p = 0, lr set in the param group as schedulers do."""
    p = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    opt, out = torch.optim.SGD([p], lr=lrs[0], momentum=momentum), []
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor([g], dtype=torch.float32)
        opt.step()
        out.append(p.item())
    return out


def init(kind: str, fan_in: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a fresh nn.Linear, or 3 x 3 nn.Conv2d, with `units` outputs."""
    with torch.random.fork_rng(devices=[]):  # seeded for a repeatable table, the caller's generator left as it was
        torch.manual_seed(0)
        layer = torch.nn.Linear(fan_in, units) if kind == "dense" else torch.nn.Conv2d(fan_in // 9, units, 3)
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


def dropout(x: np.ndarray, rate: float, seed: int | None, calls: int) -> list[np.ndarray]:
    """`calls` training-mode calls of nn.Dropout(rate) in a row, after torch.manual_seed(seed) unless None."""
    drop = torch.nn.Dropout(rate)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return [drop(torch.from_numpy(x)).numpy() for _ in range(calls)]


def running_stats(weight: np.ndarray, bias: np.ndarray, batches: list[np.ndarray],
                  momentum: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Running (mean, var) of nn.Conv2d then nn.BatchNorm2d after one training-mode forward pass a batch."""
    conv2d = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2])
    bn = torch.nn.BatchNorm2d(weight.shape[0], **_momentum(momentum))
    with torch.no_grad():
        conv2d.weight.copy_(torch.from_numpy(weight))
        conv2d.bias.copy_(torch.from_numpy(bias))
        for x in batches:
            bn(conv2d(torch.from_numpy(x)))
    return bn.running_mean.numpy(), bn.running_var.numpy()


def adam_quadratic(p0: np.ndarray, curvature: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """p after `steps` of torch.optim.Adam(lr) on sum(curvature p^2) / 2, in float32."""
    p = torch.tensor(p0, dtype=torch.float32, requires_grad=True)
    a = torch.tensor(curvature, dtype=torch.float32)
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        p.grad = a * p.detach()
        opt.step()
    return p.detach().numpy().copy()

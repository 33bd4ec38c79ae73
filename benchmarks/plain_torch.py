"""The reference cnn trained by a hand-written PyTorch loop (fwbench code only in its timer): overhead.py's baseline."""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import plain_cli
import plain_data
from fwbench.harness.bench.timing import time_step_fn

Batch = tuple[torch.Tensor, torch.Tensor]


def build(seed: int = 0, device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    """conv 32 3x3 -> relu -> maxpool 2 -> flatten -> dense 10, torch's default init seeded, and Adam."""
    # fwbench computes float32 convolutions without TF32 on GPU; so does this loop, so that a
    # comparison with it measures overhead rather than precision.
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 13 * 13, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=plain_data.LR, betas=(0.9, 0.999), eps=1e-8)
    return model, opt


def to_device(batches: list[tuple[np.ndarray, np.ndarray]], device: str) -> list[Batch]:
    """NumPy (x float32 NCHW, y int64) batches as tensors on the device."""
    return [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in batches]


def make_step(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], lrs: list[float],
              device: str) -> Callable[[int], torch.Tensor]:
    """step(i): one update on batches[i] at learning rate lrs[i], finished when it returns."""
    cuda = device == "cuda"

    def step(i: int) -> torch.Tensor:
        for group in opt.param_groups:
            group["lr"] = lrs[i]
        x, y = batches[i]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return loss.detach()
    return step


def ready_step(batches: list[tuple[np.ndarray, np.ndarray]], lrs: list[float], seed: int = 0,
               device: str = "cpu") -> Callable[[int], torch.Tensor]:
    """A fresh model's step(i) over these NumPy batches and lrs, the batches already on the device."""
    on_device = to_device(batches, device)
    model, opt = build(seed, device)
    return make_step(model, opt, on_device, lrs, device)


def time_steps(steps: int, warmup: int, seed: int = 0, batch_size: int = 64, device: str = "cpu") -> dict:
    """Time training steps of the recipe from a fresh model; batches are on the device before the clock starts."""
    n = 1 + warmup + steps
    step = ready_step(plain_data.first_batches(n, seed, batch_size), plain_data.cosine_lrs(n, batch_size), seed, device)
    return time_step_fn(step, steps, warmup)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> float:
    """Fraction of x classified as y."""
    with torch.no_grad():
        hits = sum(int((model(torch.from_numpy(x[i:i + 1000]).to(device)).argmax(1).cpu().numpy()
                        == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    return hits / len(x)


def train(epochs: int, seed: int = 0, batch_size: int = 64, device: str = "cpu") -> None:
    """The recipe for `epochs` epochs, printing each epoch's loss, training seconds and test accuracy."""
    data = plain_data.load_mnist()
    images, test_x = plain_data.normalize(data["train_x"]), plain_data.normalize(data["test_x"])
    per_epoch = math.ceil(len(images) / batch_size)
    lrs = plain_data.cosine_lrs(epochs * per_epoch, batch_size, epochs)
    model, opt = build(seed, device)
    for epoch in range(epochs):
        batches = to_device(plain_data.epoch_batches(images, data["train_y"], seed, epoch, batch_size), device)
        step = make_step(model, opt, batches, lrs[epoch * per_epoch:], device)
        start = time.perf_counter()
        losses = torch.stack([step(i) for i in range(len(batches))])
        seconds = time.perf_counter() - start
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(float(losses.mean()), 4),
                          "epoch_s": round(seconds, 2),
                          "test_accuracy": accuracy(model, test_x, data["test_y"], device)}), flush=True)


if __name__ == "__main__":
    sys.exit(plain_cli.main("torch", f"torch {torch.__version__}", time_steps, train))

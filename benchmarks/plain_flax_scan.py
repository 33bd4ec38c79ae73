"""The reference cnn in hand-written Flax with each epoch fused into one lax.scan: the baseline for flax@scan.

The epoch's images and labels go to the device once; the scan walks rows of batch indices, so no
batch is ever copied on the host, and parameters and moments are donated to it. Stock flax ops by
default; --kernels takes fwbench's custom VJPs, the baseline for flax@scan-tuned (see plain_flax.py).
"""
from __future__ import annotations

import json
import math
import sys
import time
from functools import partial

import jax
import numpy as np

import plain_data
import plain_flax
from fwbench.harness.bench.timing import time_step_fn


def build_scan(seed: int = 0, device: str = "cpu", kernels: bool = False):
    """The plain step of plain_flax, and a jitted scan of it over rows of indices into resident data."""
    model, params, opt_state, train_step = plain_flax.build(seed, device, kernels)

    @partial(jax.jit, donate_argnums=(0, 1))
    def run(params, opt_state, x, y, rows, lrs):
        def body(carry, inputs):
            idx, lr = inputs
            params, opt_state, loss = train_step(*carry, x[idx], y[idx], lr)
            return (params, opt_state), loss
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (rows, lrs))
        return params, opt_state, losses
    return model, params, opt_state, train_step, run


def resident(images: np.ndarray, labels: np.ndarray, order: list[np.ndarray], device: str):
    """NHWC images, int32 labels and the full batches' index rows on the device; the short last batch's indices."""
    dev = plain_flax.device_of(device)
    size = len(order[0])
    full = np.stack([idx for idx in order if len(idx) == size]).astype(np.int32)
    short = [idx for idx in order if len(idx) != size]
    return (jax.device_put(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), dev),
            jax.device_put(labels.astype(np.int32), dev), jax.device_put(full, dev),
            short[0].astype(np.int32) if short else None)


def time_steps(steps: int, warmup: int, seed: int = 0, batch_size: int = 64, device: str = "cpu",
               calls: int = 5, kernels: bool = False) -> dict:
    """A compiling call of `steps` steps, then `calls` timed calls of as many; per-step median and IQR."""
    batches = plain_data.first_batches(steps, seed, batch_size)
    x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    xd, yd, rows, _ = resident(x, y, [np.arange(i * batch_size, (i + 1) * batch_size) for i in range(steps)], device)
    lrs = jax.device_put(np.asarray(plain_data.cosine_lrs(steps, batch_size), np.float32), plain_flax.device_of(device))
    _, params, opt_state, _, run = build_scan(seed, device, kernels)
    state = [params, opt_state]

    def call(_: int) -> None:
        state[0], state[1], losses = run(*state, xd, yd, rows, lrs)
        jax.block_until_ready((losses, state[0]))
    timed = time_step_fn(call, calls, 0)
    return {**timed, "step_ms": timed["step_ms"] / steps, "step_ms_iqr": timed["step_ms_iqr"] / steps,
            "steps": steps, "steps_per_call": steps}


def train(epochs: int, seed: int = 0, batch_size: int = 64, device: str = "cpu", kernels: bool = False) -> None:
    """The recipe for `epochs` epochs, one scan per epoch (plus the short last batch), printing each epoch."""
    data = plain_data.load_mnist()
    images, test_x = plain_data.normalize(data["train_x"]), plain_data.normalize(data["test_x"])
    per_epoch = math.ceil(len(images) / batch_size)
    lrs = np.asarray(plain_data.cosine_lrs(epochs * per_epoch, batch_size, epochs), np.float32)
    model, params, opt_state, train_step, run = build_scan(seed, device, kernels)
    for epoch in range(epochs):
        order = plain_data.batch_order(len(images), batch_size, seed, epoch)
        x, y, rows, short = resident(plain_data.shift(images, seed, epoch), data["train_y"], order, device)
        epoch_lrs = lrs[epoch * per_epoch:(epoch + 1) * per_epoch]
        start = time.perf_counter()
        params, opt_state, losses = run(params, opt_state, x, y, rows, epoch_lrs[:len(rows)])
        if short is not None:
            params, opt_state, last = train_step(params, opt_state, x[short], y[short], epoch_lrs[-1])
            losses = np.append(np.asarray(losses), np.asarray(last))
        jax.block_until_ready(params)
        seconds = time.perf_counter() - start
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4),
                          "epoch_s": round(seconds, 2),
                          "test_accuracy": plain_flax.accuracy(model, params, test_x, data["test_y"], device)}),
              flush=True)


if __name__ == "__main__":
    sys.exit(plain_flax.main("flax scan", time_steps, train))

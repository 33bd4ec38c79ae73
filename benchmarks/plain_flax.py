"""The reference cnn trained by a hand-written Flax + optax loop: the baseline for overhead.py.

Stock flax.linen by default, like fwbench's `flax`. With --kernels it takes fwbench's custom VJPs from
backends.flax_kernels (its only fwbench code besides the step timer), like the "-tuned" modes, so that each
comparison measures the harness around the same ops.

Usage: python benchmarks/plain_flax.py [--kernels] [plain_cli's options: --steps, --epochs, --device, ...]
"""
from __future__ import annotations

import json
import math
import sys
import time
from functools import partial
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import plain_cli
import plain_data
from fwbench.backends import flax_kernels
from fwbench.harness.bench.timing import time_step_fn

# fwbench pins full float32 convolutions and matmuls (no TF32 on GPU); so does this loop, so that a
# comparison with it measures overhead rather than precision. On a CPU it changes nothing.
HIGHEST = jax.lax.Precision.HIGHEST


class CNN(nn.Module):
    """conv 32 3x3 valid -> relu -> maxpool 2 -> flatten -> dense 10, on NHWC images."""
    kernels: bool = False  # fwbench's custom VJPs for the conv and the pool instead of flax's stock ops

    @nn.compact
    def __call__(self, x):
        conv = flax_kernels.conv_general_dilated if self.kernels else None  # None: nn.Conv's own default
        x = nn.relu(nn.Conv(32, (3, 3), padding="VALID", precision=HIGHEST, conv_general_dilated=conv)(x))
        x = flax_kernels.max_pool(x, 2, 2) if self.kernels else nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10, precision=HIGHEST)(x.reshape((x.shape[0], -1)))


def device_of(device: str) -> jax.Device:
    """The jax device for "cpu" or "cuda"."""
    return jax.devices("gpu" if device == "cuda" else "cpu")[0]


def build(seed: int = 0, device: str = "cpu", kernels: bool = False):
    """Flax's default init seeded, Adam state with an injectable learning rate, and the jitted step."""
    model = CNN(kernels)
    tx = optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)(
        learning_rate=plain_data.LR, b1=0.9, b2=0.999, eps=1e-8)
    with jax.default_device(device_of(device)):
        params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 28, 28, 1)))["params"]
        opt_state = tx.init(params)

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y).mean()

    # Donation lets XLA update parameters and moments in place. The lr is an argument (a float32
    # scalar, so its type never changes and nothing recompiles) written into the state in the trace.
    @partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y, lr):
        opt_state.hyperparams["learning_rate"] = lr
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return model, params, opt_state, train_step


def to_device(batches: list[tuple[np.ndarray, np.ndarray]], device: str) -> list[tuple[jax.Array, jax.Array]]:
    """NumPy (x float32 NCHW, y int) batches as NHWC float32 and int32 arrays on the device."""
    dev = device_of(device)
    return [(jax.device_put(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), dev),
             jax.device_put(y.astype(np.int32), dev)) for x, y in batches]


def make_step(params, opt_state, train_step, batches, lrs: list[float]) -> tuple[Callable[[int], jax.Array], Callable]:
    """step(i): one update on batches[i] at lrs[i], finished when it returns; and a getter of the state."""
    lrs32 = [np.float32(lr) for lr in lrs]

    def step(i: int) -> jax.Array:
        nonlocal params, opt_state
        params, opt_state, loss = train_step(params, opt_state, *batches[i], lrs32[i])
        jax.block_until_ready((loss, params))
        return loss
    return step, lambda: (params, opt_state)


def ready_step(batches: list[tuple[np.ndarray, np.ndarray]], lrs: list[float], seed: int = 0,
               device: str = "cpu", kernels: bool = False) -> Callable[[int], jax.Array]:
    """A fresh model's step(i) over these NumPy batches and lrs, the batches already on the device."""
    on_device = to_device(batches, device)
    _, params, opt_state, train_step = build(seed, device, kernels)
    return make_step(params, opt_state, train_step, on_device, lrs)[0]


def time_steps(steps: int, warmup: int, seed: int = 0, batch_size: int = 64, device: str = "cpu",
               kernels: bool = False) -> dict:
    """Time training steps of the recipe from a fresh model; batches are on the device before the clock starts."""
    n = 1 + warmup + steps
    batches, lrs = plain_data.first_batches(n, seed, batch_size), plain_data.cosine_lrs(n, batch_size)
    return time_step_fn(ready_step(batches, lrs, seed, device, kernels), steps, warmup)


def accuracy(model: CNN, params, x: np.ndarray, y: np.ndarray, device: str) -> float:
    """Fraction of x (NCHW) classified as y."""
    apply = jax.jit(model.apply)
    dev, hits = device_of(device), 0
    for i in range(0, len(x), 1000):
        xb = jax.device_put(np.ascontiguousarray(x[i:i + 1000].transpose(0, 2, 3, 1)), dev)
        hits += int((np.asarray(apply({"params": params}, xb)).argmax(1) == y[i:i + 1000]).sum())
    return hits / len(x)


def train(epochs: int, seed: int = 0, batch_size: int = 64, device: str = "cpu", kernels: bool = False) -> None:
    """The recipe for `epochs` epochs, printing each epoch's loss, training seconds and test accuracy."""
    data = plain_data.load_mnist()
    images, test_x = plain_data.normalize(data["train_x"]), plain_data.normalize(data["test_x"])
    per_epoch = math.ceil(len(images) / batch_size)
    lrs = plain_data.cosine_lrs(epochs * per_epoch, batch_size, epochs)
    model, params, opt_state, train_step = build(seed, device, kernels)
    for epoch in range(epochs):
        batches = to_device(plain_data.epoch_batches(images, data["train_y"], seed, epoch, batch_size), device)
        step, get_state = make_step(params, opt_state, train_step, batches, lrs[epoch * per_epoch:])
        start = time.perf_counter()
        losses = [step(i) for i in range(len(batches))]
        seconds = time.perf_counter() - start
        params, opt_state = get_state()
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4),
                          "epoch_s": round(seconds, 2),
                          "test_accuracy": accuracy(model, params, test_x, data["test_y"], device)}), flush=True)


def main(name: str, time_steps: Callable[..., dict], train: Callable[..., None]) -> int:
    """plain_cli's command line, with --kernels."""
    version = f"flax {flax.__version__} / jax {jax.__version__} / optax {optax.__version__}"
    return plain_cli.main(name, version, time_steps, train, kernels=True)


if __name__ == "__main__":
    sys.exit(main("flax", time_steps, train))

"""Flax's and optax's ops as their users call them, at their defaults, for the probes and the drifts (NHWC inside)."""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fwbench.harness.conventions.probes import Refused

# Native batch-norm settings run for the drift, label -> momentum (None: the default). 0.9 is what PyTorch's 0.1
# becomes when the meaning is translated, the variance left as flax computes it.
BN_SETTINGS = {"nn.BatchNorm()": None, "nn.BatchNorm(momentum=0.9)": 0.9}
ADAM = "optax.adam(lr)"  # the Adam the drift runs


def version() -> str:
    """Versions of flax and of the jax and optax it runs with."""
    return f"flax {flax.__version__} / jax {jax.__version__} / optax {optax.__version__}"


def _nhwc(x: np.ndarray) -> jax.Array:
    """NCHW NumPy -> NHWC float32, flax's layout."""
    return jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)


def _nchw(y: jax.Array) -> np.ndarray:
    """NHWC -> NCHW NumPy, the probes' layout."""
    return np.asarray(y).transpose(0, 3, 1, 2)


def _batchnorm_layer(momentum: float | None) -> nn.BatchNorm:
    """A training-mode nn.BatchNorm, its momentum left out when None so that the default is flax's own."""
    return nn.BatchNorm(use_running_average=False, **({} if momentum is None else {"momentum": momentum}))


def batchnorm(x: np.ndarray, momentum: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training-mode apply of a freshly initialised nn.BatchNorm: (y, running mean, running var)."""
    layer, h = _batchnorm_layer(momentum), _nhwc(x)
    y, updates = layer.apply(layer.init(jax.random.PRNGKey(0), h), h, mutable=["batch_stats"])
    stats = updates["batch_stats"]
    return _nchw(y), np.asarray(stats["mean"]), np.asarray(stats["var"])


def avgpool(x: np.ndarray, size: int, stride: int | None, padding: int) -> np.ndarray:
    """nn.avg_pool, its strides left out when None and count_include_pad always."""
    strides = {} if stride is None else {"strides": (stride, stride)}
    pads = "VALID" if not padding else ((padding, padding), (padding, padding))
    return _nchw(nn.avg_pool(_nhwc(x), (size, size), padding=pads, **strides))


def conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """nn.Conv(padding="SAME") with one feature, the kernel w and no bias."""
    layer = nn.Conv(1, w.shape, strides=(stride, stride), padding="SAME", use_bias=False)
    return _nchw(layer.apply({"params": {"kernel": jnp.asarray(w[:, :, None, None])}}, _nhwc(x)))


def adam(g: float, **options) -> float:
    """One optax.adam step at lr 1 from p = 0 with gradient g; the change in p (the update)."""
    opt = optax.adam(1.0, **options)
    p = jnp.zeros(1, jnp.float32)
    updates, _ = opt.update(jnp.array([g], jnp.float32), opt.init(p), p)
    return float(updates[0])


def sgd(lrs: list[float], g: float, momentum: float) -> list[float]:
    """p after each optax.sgd(lr, momentum) step from p = 0, lr changed through optax.inject_hyperparams."""
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lrs[0], momentum=momentum)
    p = jnp.zeros(1, jnp.float32)
    state, out = opt.init(p), []
    for lr in lrs:
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        updates, state = opt.update(jnp.array([g], jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
        out.append(float(p[0]))
    return out


def init(kind: str, fan_in: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of a freshly initialised nn.Dense, or 3 x 3 nn.Conv, with `units` outputs."""
    layer, x = ((nn.Dense(units), jnp.zeros((1, fan_in), jnp.float32)) if kind == "dense" else
                (nn.Conv(units, (3, 3)), jnp.zeros((1, 3, 3, fan_in // 9), jnp.float32)))
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    return np.asarray(params["kernel"]), np.asarray(params["bias"])


def dropout(x: np.ndarray, rate: float, seed: int | None, calls: int) -> list[np.ndarray]:
    """`calls` applies of nn.Dropout(rate, deterministic=False) in a row, each given the "dropout" key of seed."""
    layer, h = nn.Dropout(rate, deterministic=False), _nhwc(x)
    if seed is None:
        try:
            return [_nchw(layer.apply({}, h))]
        except flax.errors.InvalidRngError as e:
            raise Refused(f"{type(e).__name__}: {str(e).split(' (https')[0]}") from None  # without its link
    rngs = {"dropout": jax.random.PRNGKey(seed)}
    return [_nchw(layer.apply({}, h, rngs=rngs)) for _ in range(calls)]


class _ConvBatchNorm(nn.Module):
    """A VALID conv, then a training-mode batch norm."""
    features: int
    kernel: int
    momentum: float | None

    @nn.compact
    def __call__(self, x):
        return _batchnorm_layer(self.momentum)(nn.Conv(self.features, (self.kernel,) * 2, padding="VALID")(x))


def running_stats(weight: np.ndarray, bias: np.ndarray, batches: list[np.ndarray],
                  momentum: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Running (mean, var) of nn.Conv then nn.BatchNorm after one jitted training-mode apply a batch."""
    model = _ConvBatchNorm(weight.shape[0], weight.shape[2], momentum)
    variables = model.init(jax.random.PRNGKey(0), _nhwc(batches[0]))
    conv_params = {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)), "bias": jnp.asarray(bias)}  # OIHW -> HWIO
    variables = {**variables, "params": {**variables["params"], "Conv_0": conv_params}}
    step = jax.jit(lambda v, x: model.apply(v, x, mutable=["batch_stats"])[1])
    for x in batches:
        variables = {**variables, **step(variables, _nhwc(x))}
    stats = variables["batch_stats"]["BatchNorm_0"]
    return np.asarray(stats["mean"]), np.asarray(stats["var"])


def adam_quadratic(p0: np.ndarray, curvature: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """p after `steps` of optax.adam(lr), each jitted, on sum(curvature p^2) / 2, in float32."""
    opt, a = optax.adam(lr), jnp.asarray(curvature, jnp.float32)

    @jax.jit
    def step(p, state):
        updates, state = opt.update(a * p, state, p)
        return optax.apply_updates(p, updates), state
    p = jnp.asarray(p0, jnp.float32)
    state = opt.init(p)
    for _ in range(steps):
        p, state = step(p, state)
    return np.asarray(p)

"""The cnn's ops at training shapes, as ready-to-time forward and backward closures for each framework.

Each case gets its inputs in the memory layout the framework's own previous layer produces, and
records the graph the way training does. Backward times the op's backward pass alone, from a
forward that was run outside the timed region; gradients are taken with respect to what training
needs (the image into the first conv needs none).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

N, C, H = 64, 32, 26  # batch, conv filters, conv output side
OPS = ("conv2d", "relu", "maxpool2d", "dense", "cross_entropy")


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 inputs in canonical layout: NCHW activations, conv (out, in, kh, kw), dense (in, out)."""
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {"image": f32(N, 1, 28, 28), "conv_w": f32(C, 1, 3, 3) / 3, "conv_b": f32(C),
            "act": f32(N, C, H, H), "flat": f32(N, C * 13 * 13), "dense_w": f32(C * 13 * 13, 10) / 74,
            "dense_b": f32(10), "logits": f32(N, 10), "labels": rng.integers(0, 10, N)}


def nhwc_memory(x: np.ndarray) -> np.ndarray:
    """An NCHW view of NHWC memory: how the NumPy engine's im2col conv lays out its output."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def numpy_case(op: str, phase: str, a: dict) -> tuple[Callable, Callable | None]:
    """(timed function, untimed setup) for the NumPy engine."""
    from fwbench.backends import engine as E
    T = E.Tensor
    act = nhwc_memory(a["act"])
    forward = {"conv2d": lambda: E.conv2d(T(a["image"]), T(a["conv_w"], True), T(a["conv_b"], True)),
               "relu": lambda: E.relu(T(act, True)),
               "maxpool2d": lambda: E.maxpool2d(T(act, True), 2),
               "dense": lambda: E.dense(T(a["flat"], True), T(a["dense_w"], True), T(a["dense_b"], True)),
               "cross_entropy": lambda: E.cross_entropy(T(a["logits"], True), a["labels"])}[op]
    if phase == "forward":
        return forward, None
    out = forward()
    g = np.empty_like(out.data)  # empty_like keeps the output's memory layout, as the next op's gradient does
    g[...] = np.random.default_rng(1).standard_normal(out.shape)

    def clear():
        for t in out._prev:
            t.grad = None  # else each round would also pay for adding to the last round's gradient
    return (lambda: out._backward(g)), clear


def torch_case(op: str, phase: str, a: dict) -> tuple[Callable, Callable | None]:
    """(timed function, untimed setup) for torch.nn.functional on the CPU."""
    import torch
    import torch.nn.functional as F
    t = lambda k, grad=True: torch.from_numpy(a[k]).requires_grad_(grad)  # noqa: E731
    leaves = {"conv2d": (t("image", False), t("conv_w"), t("conv_b")), "relu": (t("act"),),
              "maxpool2d": (t("act"),), "dense": (t("flat"), torch.from_numpy(a["dense_w"].T.copy()).requires_grad_(),
                                                   t("dense_b")),
              "cross_entropy": (t("logits"), torch.from_numpy(a["labels"]))}[op]
    fn = {"conv2d": F.conv2d, "relu": F.relu, "maxpool2d": lambda x: F.max_pool2d(x, 2),
          "dense": F.linear, "cross_entropy": F.cross_entropy}[op]
    if phase == "forward":
        return (lambda: fn(*leaves)), None
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    wrt = [x for x in leaves if x.requires_grad]
    return (lambda: torch.autograd.grad(out, wrt, g, retain_graph=True)), None


def flax_case(op: str, phase: str, a: dict) -> tuple[Callable, Callable | None]:
    """(timed function, untimed setup) for the jax functions the flax backend runs, jitted, NHWC."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    hi = jax.lax.Precision.HIGHEST  # as the flax backend pins every layer
    nhwc = lambda k: jnp.asarray(a[k].transpose(0, 2, 3, 1))  # noqa: E731
    image, act = nhwc("image"), nhwc("act")
    conv = lambda w, b: jax.lax.conv_general_dilated(  # noqa: E731
        image, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=hi) + b
    fn, args = {"conv2d": (conv, (jnp.asarray(a["conv_w"].transpose(2, 3, 1, 0)), jnp.asarray(a["conv_b"]))),
                "relu": (nn.relu, (act,)),
                "maxpool2d": (lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), (act,)),
                "dense": (lambda x, w, b: jnp.dot(x, w, precision=hi) + b,
                          (jnp.asarray(a["flat"]), jnp.asarray(a["dense_w"]), jnp.asarray(a["dense_b"]))),
                "cross_entropy": (lambda z: optax.softmax_cross_entropy_with_integer_labels(
                    z, jnp.asarray(a["labels"])).mean(), (jnp.asarray(a["logits"]),))}[op]
    if phase == "forward":
        fwd = jax.jit(fn)
        return (lambda: jax.block_until_ready(fwd(*args))), None
    out, pullback = jax.vjp(fn, *args)
    g = jax.random.normal(jax.random.PRNGKey(1), out.shape, out.dtype)
    # The pullback is a pytree of the forward's residuals, so jit takes it as an argument.
    bwd = jax.jit(lambda pull, g: pull(g))
    return (lambda: jax.block_until_ready(bwd(pullback, g))), None


CASES = {"numpy": numpy_case, "torch": torch_case, "flax": flax_case}

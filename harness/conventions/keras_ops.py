"""Keras 3's layers and optimizers on TensorFlow as their users call them, at their defaults, for the probes and the
drifts (NHWC inside)."""
from __future__ import annotations

import random

from fwbench.backends import keras_setup

keras_setup.select("tensorflow", "the keras column of `fwbench conventions`")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fwbench.harness.conventions.probes import Refused  # noqa: E402

# Native batch-norm settings run for the drift, label -> momentum (None: the default). 0.9 is what PyTorch's 0.1
# becomes when the meaning is translated, the variance left as Keras computes it.
BN_SETTINGS = {"BatchNormalization()": None, "BatchNormalization(momentum=0.9)": 0.9}
ADAM = "keras.optimizers.Adam(lr)"  # the Adam the drift runs


def version() -> str:
    """Versions of keras and of the tensorflow it runs on."""
    return f"keras {keras.__version__} / tensorflow {tf.__version__}"


def _nhwc(x: np.ndarray) -> tf.Tensor:
    """NCHW NumPy -> NHWC float32, Keras's default layout."""
    return tf.constant(x.transpose(0, 2, 3, 1), tf.float32)


def _nchw(y) -> np.ndarray:
    """NHWC -> NCHW NumPy, the probes' layout."""
    return keras.ops.convert_to_numpy(y).transpose(0, 3, 1, 2)


def _numpy(v: keras.Variable) -> np.ndarray:
    """A Keras variable's value as NumPy (its own method: NumPy 2 warns when converting the variable itself)."""
    return v.numpy()


def _momentum(momentum: float | None) -> dict:
    """The momentum keyword, or none, so that the default is Keras's own."""
    return {} if momentum is None else {"momentum": momentum}


def batchnorm(x: np.ndarray, momentum: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training-mode call of a fresh BatchNormalization: (y, moving mean, moving variance)."""
    layer = keras.layers.BatchNormalization(**_momentum(momentum))
    y = layer(_nhwc(x), training=True)
    return _nchw(y), _numpy(layer.moving_mean), _numpy(layer.moving_variance)


def _same_pads(n: int, size: int, stride: int) -> tuple[int, int]:
    """(before, after): the padding "same" gives n pixels under size-wide windows at stride (TensorFlow's rule)."""
    total = max((-(-n // stride) - 1) * stride + size - n, 0)
    return total // 2, total - total // 2


def avgpool(x: np.ndarray, size: int, stride: int | None, padding: int) -> np.ndarray:
    """AveragePooling2D, its strides left out when None; a padding only where "same" pads exactly that much."""
    strides = {} if stride is None else {"strides": stride}
    mode = "valid"
    if padding:
        # AveragePooling2D takes "valid" or "same", no number: a padding is run as "same" where that is the same.
        if any(_same_pads(n, size, stride or size) != (padding, padding) for n in x.shape[2:]):
            raise Refused(f'AveragePooling2D pads only as "same", which is not {padding} on every side here')
        mode = "same"
    return _nchw(keras.layers.AveragePooling2D(size, padding=mode, **strides)(_nhwc(x)))


def conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Conv2D(padding="same") with one filter, the kernel w and no bias."""
    layer = keras.layers.Conv2D(1, w.shape, strides=stride, padding="same", use_bias=False)
    layer.build((None, *x.shape[2:], 1))
    layer.kernel.assign(w[:, :, None, None])
    return _nchw(layer(_nhwc(x)))


def adam(g: float, **options) -> float:
    """One keras.optimizers.Adam step at lr 1 from p = 0 with gradient g; the change in p. eps is its epsilon."""
    if "eps_root" in options:
        raise Refused("keras.optimizers.Adam has no eps_root")
    opt = keras.optimizers.Adam(learning_rate=1.0, **({} if "eps" not in options else {"epsilon": options["eps"]}))
    p = keras.Variable(np.zeros(1, np.float32))
    opt.apply_gradients([(tf.constant([g], tf.float32), p)])
    return float(_numpy(p)[0])


def sgd(lrs: list[float], g: float, momentum: float) -> list[float]:
    """p after each keras.optimizers.SGD(momentum=momentum) step from p = 0, lr set through its learning_rate."""
    opt = keras.optimizers.SGD(learning_rate=lrs[0], momentum=momentum)
    p, out = keras.Variable(np.zeros(1, np.float32)), []
    for lr in lrs:
        opt.learning_rate = lr  # what a LearningRateScheduler callback does
        opt.apply_gradients([(tf.constant([g], tf.float32), p)])
        out.append(float(_numpy(p)[0]))
    return out


def init(kind: str, fan_in: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of a freshly built Dense, or 3 x 3 Conv2D, with `units` outputs."""
    # An initialiser without a seed draws one from Python's generator when the layer is made: seeded for a
    # repeatable table, the caller's generator left as it was.
    state = random.getstate()
    random.seed(0)
    try:
        layer, shape = ((keras.layers.Dense(units), (None, fan_in)) if kind == "dense" else
                        (keras.layers.Conv2D(units, 3), (None, 3, 3, fan_in // 9)))
        layer.build(shape)
    finally:
        random.setstate(state)
    return _numpy(layer.kernel), _numpy(layer.bias)


def dropout(x: np.ndarray, rate: float, seed: int | None, calls: int) -> list[np.ndarray]:
    """`calls` training-mode calls of Dropout(rate, seed=seed) in a row, the seed left out when None."""
    layer, h = keras.layers.Dropout(rate, **({} if seed is None else {"seed": seed})), _nhwc(x)
    return [_nchw(layer(h, training=True)) for _ in range(calls)]


def running_stats(weight: np.ndarray, bias: np.ndarray, batches: list[np.ndarray],
                  momentum: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Moving (mean, variance) of Conv2D then BatchNormalization after one training-mode call a batch."""
    conv2d = keras.layers.Conv2D(weight.shape[0], weight.shape[2])
    norm = keras.layers.BatchNormalization(**_momentum(momentum))
    conv2d.build((None, *batches[0].shape[2:], weight.shape[1]))
    conv2d.set_weights([weight.transpose(2, 3, 1, 0), bias])  # OIHW -> HWIO
    for x in batches:
        norm(conv2d(_nhwc(x)), training=True)
    return _numpy(norm.moving_mean), _numpy(norm.moving_variance)


def adam_quadratic(p0: np.ndarray, curvature: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """p after `steps` of keras.optimizers.Adam(lr) on sum(curvature p^2) / 2, in float32."""
    opt, a = keras.optimizers.Adam(learning_rate=lr), tf.constant(curvature, tf.float32)
    p = keras.Variable(np.asarray(p0, np.float32))
    for _ in range(steps):
        opt.apply_gradients([(a * p.value, p)])
    return _numpy(p)

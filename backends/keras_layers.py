"""The spec's layers as Keras 3 layers on NHWC batches: stock ones, and two that follow PyTorch's conventions."""
from __future__ import annotations

from typing import Callable

import keras
from keras import ops

from fwbench.models.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Shape,
                                 Sigmoid, Tanh)


class TorchBatchNorm(keras.layers.Layer):
    """Batch norm over the last axis with PyTorch's statistics, which keras.layers.BatchNormalization does not follow.

    Training normalises with the batch mean and biased variance and updates running = (1 - m) running + m batch with
    the unbiased variance; Keras's layer updates with the biased one and calls 1 - m its momentum."""

    def __init__(self, momentum: float, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        c = input_shape[-1]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="moving_mean")
        self.moving_var = self.add_weight(shape=(c,), initializer="ones", trainable=False, name="moving_var")

    def call(self, x, training=False, update=False):
        axes = tuple(range(len(x.shape) - 1))
        if not training:
            centred, var = x - self.moving_mean, self.moving_var
        else:
            mean = ops.mean(x, axis=axes)
            centred = x - mean
            var = ops.mean(centred * centred, axis=axes)
            if update:  # only a training step moves them; loss_and_grads leaves them as they are
                count = ops.cast(ops.size(x) // x.shape[-1], x.dtype)  # values per channel, the batch's too
                m = self.momentum
                self.moving_mean.assign((1 - m) * self.moving_mean + m * mean)
                self.moving_var.assign((1 - m) * self.moving_var + m * var * (count / (count - 1)))
        return centred * (1 / ops.sqrt(var + self.epsilon)) * self.gamma + self.beta


class MaskedDropout(keras.layers.Dropout):
    """keras.layers.Dropout; given the harness's keep-mask, x * (mask / (1 - rate)) instead, as PyTorch scales it."""

    # `keep`, not `mask`: Keras takes a call argument named mask for its own masking and attaches it to the output.
    def call(self, x, training=False, keep=None):
        if training and keep is not None:
            return x * (ops.cast(keep, x.dtype) / ops.convert_to_tensor(1 - self.rate, x.dtype))
        return super().call(x, training=training)


def conv2d(layer: Conv2D, shape: Shape, **kw) -> list[keras.layers.Layer]:
    """Conv2D with "valid" padding, after ZeroPadding2D when the spec pads: "same" with stride 2 pads as torch can."""
    top, bottom, left, right = layer.pads(shape)
    conv = keras.layers.Conv2D(layer.out_channels, layer.kernel_size, strides=layer.stride, padding="valid", **kw)
    if not any((top, bottom, left, right)):
        return [conv]
    return [keras.layers.ZeroPadding2D(((top, bottom), (left, right)), dtype=kw["dtype"]), conv]


def activation(name: str) -> Callable[..., list[keras.layers.Layer]]:
    return lambda layer, shape, **kw: [keras.layers.Activation(name, dtype=kw["dtype"])]


# Layer type -> the Keras layers it becomes (the last one holds its weights), from the layer, its input shape and
# the layers' dtype. Flatten on NHWC gives H, W, C order: layout.py permutes what reads it.
LAYERS: dict[type, Callable[..., list[keras.layers.Layer]]] = {
    Conv2D: conv2d,
    ReLU: activation("relu"),
    Tanh: activation("tanh"),
    Sigmoid: activation("sigmoid"),
    MaxPool2D: lambda layer, shape, **kw: [keras.layers.MaxPooling2D(layer.size, layer.step, dtype=kw["dtype"])],
    AvgPool2D: lambda layer, shape, **kw: [keras.layers.AveragePooling2D(layer.size, layer.step, dtype=kw["dtype"])],
    Flatten: lambda layer, shape, **kw: [keras.layers.Flatten(dtype=kw["dtype"])],
    Dense: lambda layer, shape, **kw: [keras.layers.Dense(layer.units, **kw)],
    BatchNorm: lambda layer, shape, **kw: [TorchBatchNorm(layer.momentum, layer.eps, dtype=kw["dtype"])],
    Dropout: lambda layer, shape, **kw: [MaskedDropout(layer.rate, seed=kw["seed"], dtype=kw["dtype"])],
}


def make(layer: Layer, shape: Shape, dtype: str, seed: int) -> list[keras.layers.Layer]:
    """The Keras layers for one spec layer; conv and dense get the seeded initialisers Keras itself defaults to."""
    if isinstance(layer, (Conv2D, Dense)):
        kw = dict(dtype=dtype, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    else:
        kw = dict(dtype=dtype, seed=seed)
    return LAYERS[type(layer)](layer, shape, **kw)

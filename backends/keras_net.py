"""The spec as a chain of Keras 3 layers over NHWC batches, on whichever backend this process runs Keras."""
from __future__ import annotations

from typing import Callable

import keras  # imported after keras_setup.select, by the backend that uses this module
import numpy as np

from fwbench.backends import keras_layers, layout
from fwbench.backends.base import BackendError
from fwbench.backends.lowering import lower
from fwbench.models.params import Params, check_masks
from fwbench.models.spec import BatchNorm, Dropout, ModelSpec

# Canonical suffix of each Keras weight, by the variable's own name.
CANONICAL = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
             "moving_mean": "running_mean", "moving_var": "running_var"}


class Net:
    """The spec's layers as Keras layers over an NHWC batch; layer i's weights live in its last Keras layer."""

    def __init__(self, spec: ModelSpec, dtype: str, seed: int):
        lower(keras_layers.LAYERS, spec, "keras")  # a BackendError naming the first layer type it lacks
        self.spec = spec
        self.layers = [keras_layers.make(layer, spec.input_of(i), dtype, seed + i)
                       for i, layer in enumerate(spec.layers)]
        self.dropouts = {i for i, layer in enumerate(spec.layers) if isinstance(layer, Dropout)}
        self.norms = {i for i, layer in enumerate(spec.layers) if isinstance(layer, BatchNorm)}
        c, h, w = spec.input
        self(keras.ops.zeros((1, h, w, c), dtype))  # builds every weight

    def __call__(self, x, training: bool = False, masks: dict | None = None, update: bool = False):
        for i, layers in enumerate(self.layers):
            for layer in layers:
                if i in self.norms:
                    x = layer(x, training=training, update=update)
                elif i in self.dropouts:
                    x = layer(x, training=training, keep=None if masks is None else masks[i])
                else:
                    x = layer(x)
        return x

    def weights(self, trainable: bool) -> dict[str, keras.Variable]:
        """Canonical key -> Keras variable: the parameters (trainable) or batch norm's running statistics."""
        out = {}
        for i, layers in enumerate(self.layers):
            for v in layers[-1].trainable_weights if trainable else layers[-1].non_trainable_weights:
                out[f"{i}.{CANONICAL[v.name]}"] = v
        return out

    def variables(self) -> list[keras.Variable]:
        """Every variable the layers read or write: the weights, and the dropout layers' seed-generator states."""
        return [v for layers in self.layers for layer in layers for v in layer.variables]


def native_masks(spec: ModelSpec, masks: Params | None, put: Callable) -> dict | None:
    """The harness's keep-masks as {layer index: NHWC bool array on the device}, as Net takes them; None stays."""
    if masks is None:
        return None
    check_masks(spec, masks, len(next(iter(masks.values()))) if masks else 0)
    native = layout.masks_to_channels_last(spec, masks)
    return {int(k.split(".")[0]): put(np.asarray(v, bool)) for k, v in native.items()}


def masks_for(masks: dict | None, size: int) -> dict | None:
    """The masks set, if they fit a batch of `size`; BackendError if they were set for another size."""
    given = len(next(iter(masks.values()))) if masks else size
    if given != size:
        raise BackendError(f"keras backend: dropout masks for a batch of {given} are set, but this is a batch of "
                           f"{size}; call set_masks for it")
    return masks

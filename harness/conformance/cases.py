"""The tiny specs and seeded batches the battery runs on, and the float64 reference's answers on them."""
from __future__ import annotations

import functools

import numpy as np

from fwbench import models
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.models.params import Params, dropout_masks, init_params
from fwbench.models.spec import ModelSpec

SEED = 7
BATCH = 4        # per-layer cases
MODEL_BATCH = 8  # tinycnn and cnn


def _spec(name: str, input_: list[int], classes: int, *layers: dict) -> dict:
    return {"name": name, "input": input_, "classes": classes, "layers": list(layers)}


def _conv(out: int, k: int, stride: int = 1, padding: int | str = 0) -> dict:
    return {"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": padding}


FLAT, RELU = {"type": "flatten"}, {"type": "relu"}
DENSE3 = {"type": "dense", "units": 3}
# One case per layer variant, each as small as a valid spec allows: it must end in a dense layer of
# `classes` units, so every case has one, and its row is read with the dense cases' rows beside it.
# A case's name begins with the type of the layer it tests (layer_type); every type needs at least one.
# Inputs are multi-channel and non-square (H != W) so a swapped axis cannot go unnoticed; a 1x1 conv
# in front of relu and maxpool2d gives them a parameter whose gradient passes through their backward.
LAYER_CASES: dict[str, dict] = {
    # (in, out) is square in the second dense layer: a transposed weight keeps its shape there.
    "dense": _spec("dense", [5, 1, 1], 4, FLAT, {"type": "dense", "units": 4}, {"type": "dense", "units": 4}),
    "flatten (C, H, W order)": _spec("flatten", [3, 4, 5], 3, FLAT, DENSE3),
    "conv2d 3x3": _spec("conv", [3, 7, 5], 3, _conv(4, 3), FLAT, DENSE3),
    "conv2d 3x3 stride 2 padding 1": _spec("conv_s2p1", [3, 8, 7], 3, _conv(4, 3, 2, 1), FLAT, DENSE3),
    # stride 3 over a 2x2 kernel skips pixels; padding 2 is wider than the kernel's overlap.
    "conv2d 2x2 stride 3 padding 2": _spec("conv_s3p2", [2, 9, 7], 3, _conv(3, 2, 3, 2), FLAT, DENSE3),
    "conv2d 3x3 same": _spec("conv_same", [3, 7, 5], 3, _conv(4, 3, 1, "same"), FLAT, DENSE3),
    # "same" at stride 2 pads 9 rows (1, 2), the odd one at the end, and 8 columns (1, 1).
    "conv2d 4x4 stride 2 same (asymmetric)": _spec("conv_same_s2", [3, 9, 8], 3, _conv(4, 4, 2, "same"), FLAT,
                                                   DENSE3),
    "relu": _spec("relu", [2, 5, 6], 3, _conv(3, 1), RELU, FLAT, DENSE3),
    "tanh": _spec("tanh", [2, 5, 6], 3, _conv(3, 1), {"type": "tanh"}, FLAT, DENSE3),
    "sigmoid": _spec("sigmoid", [2, 5, 6], 3, _conv(3, 1), {"type": "sigmoid"}, FLAT, DENSE3),
    # 7x9 under a 2x2 pool leaves a row and a column over, which must be dropped.
    "maxpool2d 2": _spec("pool2", [2, 7, 9], 3, _conv(3, 1), {"type": "maxpool2d", "size": 2}, FLAT, DENSE3),
    "maxpool2d 3 stride 2 (overlapping)": _spec("pool32", [2, 9, 8], 3, _conv(3, 1),
                                                {"type": "maxpool2d", "size": 3, "stride": 2}, FLAT, DENSE3),
    "avgpool2d 2": _spec("avgpool2", [2, 7, 9], 3, _conv(3, 1), {"type": "avgpool2d", "size": 2}, FLAT, DENSE3),
    "avgpool2d 3 stride 2 (overlapping)": _spec("avgpool32", [2, 9, 8], 3, _conv(3, 1),
                                                {"type": "avgpool2d", "size": 3, "stride": 2}, FLAT, DENSE3),
    # The bias of the conv (dense) layer in front of a batch norm has a gradient of exactly zero: the norm
    # subtracts it again. The features case sets eps and momentum, so a backend's own defaults show.
    "batchnorm (C, H, W)": _spec("bn_map", [3, 6, 5], 3, _conv(4, 3), {"type": "batchnorm"}, FLAT, DENSE3),
    "batchnorm (F)": _spec("bn_features", [2, 3, 2], 3, FLAT, {"type": "dense", "units": 5},
                           {"type": "batchnorm", "eps": 1e-3, "momentum": 0.3}, DENSE3),
    "dropout 0.5": _spec("dropout", [2, 5, 6], 3, _conv(3, 1), {"type": "dropout", "rate": 0.5}, FLAT, DENSE3),
}
# Round trip: conv, pool, a flatten of a spatial map (flax permutes that dense layer's rows), square dense.
ROUND_TRIP = _spec("round_trip", [2, 8, 7], 5, _conv(3, 3, 2, 1), RELU, {"type": "maxpool2d", "size": 2},
                   FLAT, {"type": "dense", "units": 5}, RELU, {"type": "dense", "units": 5})


def layer_type(case: str) -> str:
    """The layer type a layer case tests: the first word of its name ("conv2d 3x3" -> "conv2d")."""
    return case.split()[0]


def case_of_type(kind: str) -> str | None:
    """The first layer case of a layer type, or None when there is none."""
    return next((case for case in LAYER_CASES if layer_type(case) == kind), None)


@functools.cache
def spec_of(case: str) -> ModelSpec:
    """A layer case, "round trip", or a shipped model, as a validated spec."""
    if case in LAYER_CASES:
        return models.parse(LAYER_CASES[case], case)
    return models.parse(ROUND_TRIP, case) if case == "round trip" else models.get(case)


@functools.cache
def params_of(case: str) -> Params:
    """The canonical float64 initial parameters of a case."""
    return init_params(spec_of(case), SEED, "float64")


@functools.cache
def batch_of(case: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded float64 NCHW batch and integer labels for a case."""
    spec = spec_of(case)
    n = BATCH if case in LAYER_CASES else MODEL_BATCH
    rng = np.random.default_rng(SEED + 1)
    return rng.standard_normal((n, *spec.input)), rng.integers(0, spec.classes, n)


def masks_of(case: str, step: int = 0) -> Params | None:
    """The harness's dropout keep-masks for one training step on the case's batch; None when it has no dropout."""
    return dropout_masks(spec_of(case), SEED, step, len(batch_of(case)[1])) or None


def use_masks(backend, case: str, step: int = 0) -> None:
    """Hand a backend the harness's masks for a step of a case with dropout (a case without needs none)."""
    masks = masks_of(case, step)
    if masks is not None:
        backend.set_masks(masks)


def rounded(values: Params, dtype: str) -> Params:
    """Float64 copies of values as rounded to dtype."""
    # Rounding the inputs first leaves only the backend's arithmetic in the difference, not the cast.
    return {k: np.asarray(v).astype(dtype).astype(np.float64) for k, v in values.items()}


def reference_backend(case: str, dtype: str) -> NumpyBackend:
    """The float64 engine at the case's params as rounded to dtype."""
    return NumpyBackend(spec_of(case), rounded(params_of(case), dtype), dtype="float64")


def reference_batch(case: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The case's batch, its inputs as rounded to dtype, in float64."""
    x, y = batch_of(case)
    return x.astype(dtype).astype(np.float64), y


@functools.cache
def reference(case: str, dtype: str) -> tuple[np.ndarray, float, Params]:
    """Logits, loss and gradients (under the harness's masks) of the float64 engine, inputs rounded to dtype."""
    ref, (x, y) = reference_backend(case, dtype), reference_batch(case, dtype)
    use_masks(ref, case)
    loss, grads = ref.loss_and_grads(x, y)
    return ref.forward(x), loss, grads


def layer_of(spec: ModelSpec, key: str) -> str:
    """'0.weight (conv2d)': a canonical parameter name with the type of the layer it belongs to."""
    return f"{key} ({spec.layers[int(key.split('.')[0])].type})"

"""Canonical <-> channels-last conversions: exact, invertible, and NumPy only."""
import subprocess
import sys

import numpy as np

from fwbench import models
from fwbench.backends import layout
from fwbench.models.params import init_params

# Two dense layers after the flatten of a non-square (4, 4, 3) activation: only the first is permuted.
WIDE = models.parse({"name": "wide", "input": [3, 11, 9], "classes": 5, "layers": [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 3, "stride": 1},
    {"type": "flatten"},
    {"type": "relu"},
    {"type": "dense", "units": 7},
    {"type": "relu"},
    {"type": "dense", "units": 5},
]})


def test_flatten_sources_name_the_dense_fed_by_a_spatial_flatten():
    assert layout.flatten_sources(WIDE) == {5: (4, 4, 3)}
    assert layout.flatten_sources(models.get("cnn")) == {4: (32, 13, 13)}
    assert layout.flatten_sources(models.get("mlp")) == {1: (1, 28, 28)}


def test_round_trip_is_exact():
    p = init_params(WIDE, 0, "float64")
    native = layout.to_channels_last(WIDE, p)
    assert {k: v.shape for k, v in native.items()} == layout.channels_last_shapes(WIDE)
    back = layout.from_channels_last(WIDE, native)
    assert all(np.array_equal(back[k], p[k]) for k in p)
    assert all(not np.shares_memory(native[k], p[k]) for k in p)


def test_channels_last_computes_the_same_function():
    p = init_params(WIDE, 0, "float64")
    native = layout.to_channels_last(WIDE, p)
    o, c, i, j = 3, 2, 1, 0
    assert native["0.weight"][i, j, c, o] == p["0.weight"][o, c, i, j]
    act = np.random.default_rng(0).standard_normal((2, 4, 4, 3))  # NCHW activation entering the flatten
    want = act.reshape(2, -1) @ p["5.weight"]
    got = layout.nchw_to_nhwc(act).reshape(2, -1) @ native["5.weight"]
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert np.array_equal(native["7.weight"], p["7.weight"])


def test_layout_imports_no_framework():
    code = "import sys, backends.layout; assert not {'torch', 'jax', 'flax'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# A flatten of a (2, 3, 2) map read by batch norm and dropout before the dense: all three see H, W, C order in flax.
FEATURES = models.parse({"name": "features", "input": [1, 4, 3], "classes": 3, "layers": [
    {"type": "conv2d", "out_channels": 2, "kernel_size": 2, "padding": "same", "stride": 2},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "batchnorm"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 3},
]})


def test_flatten_sources_see_through_batchnorm_and_dropout():
    assert layout.flat_inputs(FEATURES) == {3: (2, 2, 2), 4: (2, 2, 2), 5: (2, 2, 2)}
    assert layout.flatten_sources(FEATURES) == {5: (2, 2, 2)}


def test_features_after_a_flatten_follow_the_channels_last_order():
    rng = np.random.default_rng(1)
    p = {k: rng.standard_normal(v.shape) for k, v in init_params(FEATURES, 0, "float64").items()}
    buffers = {"3.running_mean": rng.standard_normal(8), "3.running_var": rng.random(8) + 0.5}
    masks = {"4.mask": rng.random((2, 8)) > 0.5}
    native, nbuf = layout.to_channels_last(FEATURES, p), layout.to_channels_last(FEATURES, buffers, "buffers")
    nmask = layout.masks_to_channels_last(FEATURES, masks)
    act = rng.standard_normal((2, 2, 2, 2))  # the NCHW map entering the flatten

    def head(flat, q, b, keep):
        norm = (flat - b["3.running_mean"]) / np.sqrt(b["3.running_var"]) * q["3.weight"] + q["3.bias"]
        return (norm * keep["4.mask"]) @ q["5.weight"] + q["5.bias"]
    want = head(act.reshape(2, -1), p, buffers, masks)
    np.testing.assert_allclose(head(layout.nchw_to_nhwc(act).reshape(2, -1), native, nbuf, nmask), want, rtol=1e-13)
    assert not np.array_equal(native["3.weight"], p["3.weight"])
    back = layout.from_channels_last(FEATURES, nbuf, "buffers")
    assert all(np.array_equal(back[k], buffers[k]) for k in buffers)


def test_masks_of_maps_become_nhwc_and_stay_boolean():
    spec = models.parse({"name": "m", "input": [2, 3, 4], "classes": 2, "layers": [
        {"type": "dropout", "rate": 0.2}, {"type": "flatten"}, {"type": "dense", "units": 2}]})
    mask = np.random.default_rng(0).random((5, 2, 3, 4)) > 0.2
    got = layout.masks_to_channels_last(spec, {"0.mask": mask})["0.mask"]
    assert got.dtype == bool and np.array_equal(got, mask.transpose(0, 2, 3, 1))

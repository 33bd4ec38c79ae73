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

"""Tie conventions measured per backend, and constructed ties whose gradients those conventions explain."""
from __future__ import annotations

import functools
import sys
from unittest import mock

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fwbench import backends
from fwbench import models
from fwbench.backends import numpy_backend
from fwbench.backends.engine import Tensor, parallel
from fwbench.harness.agreement.ties import count_ties, probe, tie_case
from fwbench.models.params import init_params
from specs import WIDE

SPECS = {"tinycnn": models.get("tinycnn"), "wide": WIDE}
# Share of a window's gradient each tied maximum gets, from the (..., k*k) mask of maxima.
TIE_RULES = {
    "first": lambda hit: np.eye(hit.shape[-1])[hit.argmax(-1)],
    "last": lambda hit: np.eye(hit.shape[-1])[hit.shape[-1] - 1 - hit[..., ::-1].argmax(-1)],
    "split": lambda hit: hit / hit.sum(-1, keepdims=True),
    "all": lambda hit: hit.astype(float),
    "half": lambda hit: hit * 0.5,  # no named convention: probe must say "other"
}


def relu_with(grad_at_zero: float):
    """relu whose gradient at exactly 0 is grad_at_zero."""
    def relu(x: Tensor) -> Tensor:
        slope = np.where(x.data > 0, 1.0, np.where(x.data == 0, grad_at_zero, 0.0))
        out = Tensor(np.maximum(x.data, 0), _prev=(x,), _op="relu")
        out._backward = lambda g: x.accumulate(g * slope) if x.requires_grad else None
        return out
    return relu


def maxpool_with(rule: str):
    """maxpool2d that routes a window's gradient to its tied maxima by TIE_RULES[rule]."""
    def maxpool2d(x: Tensor, size: int, stride: int | None = None) -> Tensor:
        s = stride or size
        # x is the engine's NHWC: windows are (N, OH, OW, C, size, size)
        win = sliding_window_view(x.data, (size, size), axis=(1, 2))[:, ::s, ::s]
        best = win.max(axis=(4, 5))
        share = TIE_RULES[rule](win.reshape(*best.shape, -1) == best[..., None])
        oh, ow = best.shape[1:3]
        out = Tensor(best, _prev=(x,), _op="maxpool2d")

        def _backward(g):
            dwin = (g[..., None] * share).reshape(win.shape)
            dx = np.zeros_like(x.data)
            for a in range(size):
                for b in range(size):
                    dx[:, a:a + s * (oh - 1) + 1:s, b:b + s * (ow - 1) + 1:s] += dwin[..., a, b]
            x.accumulate(dx)
        out._backward = _backward
        return out
    return maxpool2d


def convention_backend(grad_at_zero: float, rule: str) -> type[backends.Backend]:
    """The NumPy backend with another relu'(0) and pool tie rule: a stand-in for a framework that differs."""
    class Convention(numpy_backend.NumpyBackend):
        name = f"numpy[relu'(0)={grad_at_zero},{rule}]"
        fuse = False  # the fused ops have the canonical relu convention built in

        def _logits(self, x, run):
            # Backward closures are made during the forward pass, so patching the ops for it suffices.
            with mock.patch.multiple(numpy_backend, relu=relu_with(grad_at_zero), maxpool2d=maxpool_with(rule)):
                return super()._logits(x, run)
    return Convention


@functools.cache
def measured(name: str) -> dict:
    return probe(name)


@functools.cache
def case(key: str, n: int = 4, seed: int = 0):
    spec = SPECS[key]
    return tie_case(spec, init_params(spec, 0, "float64"), n, seed)


def grads(cls, key: str) -> dict[str, np.ndarray]:
    x, y, params = case(key)
    # In one process: the numpy backend itself would split a step over the worker processes that an earlier test
    # left configured, where the stand-in subclasses do not, and sum its gradients in another order.
    with mock.patch.object(parallel, "DATA_PARALLEL", False):
        return cls(SPECS[key], params, dtype="float64").loss_and_grads(x, y)[1]


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_numpy_conventions():
    assert measured("numpy") == {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"}


@pytest.mark.parametrize("name", ["torch", "flax"])
def test_framework_conventions_as_measured(name):
    if backends.missing(name):
        pytest.skip(f"{name} not installed")
    # Measured on CPU (torch 2.13, jax 0.10 / flax 0.12): both follow the NumPy engine's convention.
    assert measured(name) == {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"}


@pytest.mark.parametrize("grad_at_zero, rule, want", [
    (0.0, "first", "first"), (1.0, "split", "split"), (0.5, "last", "last"), (0.0, "all", "all"),
    (1.0, "half", "other: [[0.5, 0.5], [0.5, 0.5]]"),
])
def test_probe_detects_a_different_convention(grad_at_zero, rule, want, monkeypatch):
    # Backends are built by name, so the stand-in is named by its module path.
    monkeypatch.setattr(sys.modules[__name__], "StandIn", convention_backend(grad_at_zero, rule), raising=False)
    assert probe(f"{__name__}:StandIn") == {"relu_grad_at_zero": grad_at_zero, "maxpool_tie": want}


def test_probe_builds_the_named_mode():
    from test_registry import Moded
    Moded.built.clear()
    assert probe("test_registry:Moded@fancy") == {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"}
    assert Moded.built == ["fancy", "fancy"]  # one probe model for relu, one for the pool


@pytest.mark.parametrize("key", SPECS)
def test_tie_case_hits_relu_zeros_and_pool_ties(key):
    x, y, params = case(key)
    counts = count_ties(SPECS[key], params, x)
    assert counts["relu_zeros"] > 0 and counts["pool_ties"] > 0, counts
    assert set(np.unique(x)) <= {0.0, 1.0} and y.shape == (4,)
    for name, value in params.items():
        if name.endswith(".bias"):
            assert not value.any(), name
        else:
            assert np.array_equal(value * 2**20, np.round(value * 2**20)), name  # dyadic, few bits
            assert np.count_nonzero(value) > value.size // 2, name
    # Exact arithmetic: float32 sees the very same activations, hence the very same ties.
    as32 = {k: v.astype(np.float32) for k, v in params.items()}
    logits32 = numpy_backend.NumpyBackend(SPECS[key], as32).forward(x.astype(np.float32))
    logits64 = numpy_backend.NumpyBackend(SPECS[key], params, dtype="float64").forward(x)
    assert np.array_equal(logits32.astype(np.float64), logits64)


def test_count_ties_by_hand():
    spec = models.parse({"name": "hand", "input": [1, 2, 4], "classes": 2, "layers": [
        {"type": "relu"}, {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 2}]})
    x = np.array([[[[0.0, -1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 1.0]]]])
    params = {"3.weight": np.zeros((2, 2)), "3.bias": np.zeros(2)}
    # Relu inputs equal to 0: three. Windows: left all 0 after relu (tie), right 3 twice (tie).
    assert count_ties(spec, params, x) == {"relu_zeros": 3, "pool_ties": 2}


@pytest.mark.parametrize("key", SPECS)
def test_each_convention_changes_tie_case_grads(key):
    numpy_grads = grads(numpy_backend.NumpyBackend, key)
    same = grads(convention_backend(0.0, "first"), key)
    assert all(rel(same[k], numpy_grads[k]) == 0.0 for k in numpy_grads)  # the stand-in is faithful
    for other in [(1.0, "first"), (0.0, "split")]:  # relu alone, then the pool alone
        moved = grads(convention_backend(*other), key)
        assert max(rel(moved[k], numpy_grads[k]) for k in numpy_grads) > 1e-3, other


@pytest.mark.parametrize("key", SPECS)
def test_tie_case_grads_follow_measured_conventions(backend_name, key):
    conv = measured(backend_name)
    if conv["maxpool_tie"].startswith("other"):
        pytest.skip(f"{backend_name} routes pool ties as {conv['maxpool_tie']}; no NumPy stand-in for it")
    want = grads(convention_backend(conv["relu_grad_at_zero"], conv["maxpool_tie"]), key)
    got = grads(backends.load(backend_name), key)
    for k in want:
        assert rel(got[k], want[k]) <= 1e-10, k


# A conv the engine runs by Winograd in float32 (16 to 16 channels, 3 x 3 on 8 x 8), and dropout on 4-D features.
WINO = models.parse({"name": "wino", "input": [1, 8, 8], "classes": 4, "layers": [
    {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": "same"}, {"type": "relu"},
    {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": "same"}, {"type": "relu"},
    {"type": "dropout", "rate": 0.5}, {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
    {"type": "dense", "units": 4}]})


def test_count_ties_gives_dropout_its_masks_channels_last():
    params = init_params(WINO, 0, "float64")
    x, _, params = tie_case(WINO, params, 4, 0)
    counts = count_ties(WINO, params, x)  # the canonical (N, C, H, W) masks once met NHWC features: a crash
    assert counts["relu_zeros"] > 0 and counts["pool_ties"] > 0, counts


def test_the_float64_reference_keeps_the_tie_case_exact_where_float32_runs_winograd():
    pytest.importorskip("torch")  # the numpy-only environment has none to compare
    from fwbench.backends.engine import winograd
    from fwbench.harness.agreement.agree import REFERENCE, one_step
    x, y, params = tie_case(WINO, init_params(WINO, 0, "float64"), 4, 0)
    assert winograd.applies(np.zeros((4, 8, 8, 16), np.float32), (16, 16, 3, 3), 1, (1,) * 4)
    report = one_step(WINO, ["torch"], params, x, y, dtype="float32", devices={"torch": "cpu"})
    # torch's float32 direct conv is exact on the case; a reference by Winograd broke its ties by rounding (0.1).
    assert all(cells[f"torch~{REFERENCE}"]["rel_l2"] <= 1e-5 for cells in report.table.values()), report.table

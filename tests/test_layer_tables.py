"""Layers own their behaviour; every backend lowers through a table that covers every layer type or says which not."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pytest

from fwbench import backends
from fwbench import models
from fwbench.backends import numpy_backend
from fwbench.backends.base import BackendError
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.conformance import cases, layers
from fwbench.harness.conformance.checks import Check, required
from fwbench.harness.conformance.context import Context
from fwbench.harness.conformance.runner import run
from fwbench.models.spec import FIELDS, LAYER_TYPES, Layer

# Each built-in backend: (module, its table's name in that module, or in a submodule after a dot).
TABLES = {"numpy": ("fwbench.backends.numpy_backend", "LOWER"),
          "torch": ("fwbench.backends.torch_backend", "MODULES"),
          "flax": ("fwbench.backends.flax_net", "LAYERS"),
          "micrograd": ("fwbench.backends.micrograd.layers", "LAYERS")}


def test_fields_and_types_come_from_the_dataclasses():
    assert list(LAYER_TYPES) == ["conv2d", "relu", "maxpool2d", "flatten", "dense", "tanh", "sigmoid", "avgpool2d",
                                 "batchnorm", "dropout"]
    assert FIELDS == {"conv2d": {"out_channels": True, "kernel_size": True, "stride": False, "padding": False},
                      "relu": {}, "maxpool2d": {"size": True, "stride": False}, "flatten": {}, "dense": {"units": True},
                      "tanh": {}, "sigmoid": {}, "avgpool2d": {"size": True, "stride": False},
                      "batchnorm": {"eps": False, "momentum": False}, "dropout": {"rate": True}}


def test_layers_know_their_shapes_parameters_text_and_cost():
    spec = models.get("tinycnn")
    conv = spec.layers[0]
    assert conv.output_shape(spec.input) == spec.shapes[0]
    assert conv.param_shapes(spec.input) == {"weight": (4, 1, 3, 3), "bias": (4,)}
    assert conv.describe() == "conv2d(4, k3, s2, p1)"
    assert conv.scalar_ops(spec.input, spec.shapes[0]) == 4 * 14 * 14 * 1 * 9
    assert [layer.describe() for layer in models.get("cnn").layers] == [
        "conv2d(32, k3, s1, p0)", "relu", "maxpool2d(2, s2)", "flatten", "dense(10)"]


@pytest.mark.parametrize("name", list(TABLES))
def test_every_table_covers_every_layer_type_or_declares_it(name):
    if backends.missing(name):
        pytest.skip(f"{name} not installed")
    module, attr = TABLES[name]
    table = getattr(importlib.import_module(module), attr)
    unsupported = backends.load(name).UNSUPPORTED_LAYERS
    assert {cls.type for cls in table} | set(unsupported) == set(LAYER_TYPES)


def test_every_layer_type_has_a_conformance_case():
    assert all(cases.case_of_type(kind) for kind in LAYER_TYPES)
    assert all(cases.layer_type(case) in LAYER_TYPES for case in cases.LAYER_CASES)


@dataclass(frozen=True)
class Identity(Layer):
    """A layer type no backend lowers yet, as a new one is before its table entries exist."""
    type: str = field(default="identity", init=False)


class Declares(NumpyBackend):
    UNSUPPORTED_LAYERS = frozenset({"identity"})


class Undeclared(NumpyBackend):
    UNSUPPORTED_LAYERS = None  # as a plugin built without a table: it declares nothing


@pytest.fixture
def new_layer_type(monkeypatch):
    """'identity' as a spec layer type with its conformance case, but in no backend's table."""
    monkeypatch.setitem(LAYER_TYPES, "identity", Identity)
    monkeypatch.setitem(FIELDS, "identity", {})
    case = {"name": "identity", "input": [2, 3, 4], "classes": 3,
            "layers": [{"type": "identity"}, {"type": "flatten"}, {"type": "dense", "units": 3}]}
    monkeypatch.setitem(cases.LAYER_CASES, "identity", case)
    yield
    cases.spec_of.cache_clear()
    cases.params_of.cache_clear()
    cases.batch_of.cache_clear()
    cases.reference.cache_clear()


def rows(cls: type) -> dict[str, tuple[str, str]]:
    checks = [Check(name, run, required(name)) for name, run in
              [("lowering/identity", lambda ctx: layers.lowering(ctx, "identity")),
               ("forward/identity", lambda ctx: layers.forward(ctx, "identity"))]]
    ctx = Context(f"{cls.__module__}:{cls.__qualname__}", "cpu", "float64")
    return {r.name: (r.status, r.detail) for r in run(ctx, checks)}


def test_a_missing_table_entry_is_refused_naming_the_layer(new_layer_type):
    spec = models.parse(cases.LAYER_CASES["identity"])
    with pytest.raises(BackendError, match=r"backend 'numpy' has no lowering for layer 0 \(identity\)"):
        NumpyBackend(spec)


def test_a_layer_type_the_backend_lacks_is_not_supported_when_declared_or_undeclarable(new_layer_type):
    for cls in (Declares, Undeclared):
        got = rows(cls)
        assert got["lowering/identity"] == ("not supported", "backend 'numpy' has no lowering for layer 0 (identity)")
        assert got["forward/identity"][0] == "not supported"


def test_a_table_gap_the_backend_does_not_declare_fails_its_lowering_row(new_layer_type):
    got = rows(NumpyBackend)
    assert got["lowering/identity"][0] == "fail" and "UNSUPPORTED_LAYERS does not list 'identity'" in (
        got["lowering/identity"][1])
    assert got["forward/identity"][0] == "not supported"  # not a type every backend must run


def test_one_table_entry_lowers_a_new_layer_type(new_layer_type, monkeypatch):
    monkeypatch.setitem(numpy_backend.LOWER, Identity, lambda h, i, layer, w, b, run: h)
    assert rows(NumpyBackend) == {"lowering/identity": ("pass", "built 'identity'"),
                                  "forward/identity": ("pass", "exact")}
    assert rows(Declares)["lowering/identity"] == (
        "note", "built 'identity', though UNSUPPORTED_LAYERS lists 'identity'")

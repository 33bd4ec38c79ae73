"""The bench's checks per NAME@MODE: one agreement run over every mode, keyed by the full name."""
import pytest

from fwbench import backends
from fwbench.harness.bench import checks


def test_agreement_is_keyed_by_name_and_mode():
    if backends.missing("torch"):
        pytest.skip("torch not installed")
    names = ["numpy", "torch@channels_last", "torch@cudagraphs", "torch@channels_last"]
    doc = checks.agreement("tinycnn", names, "cpu")
    assert set(doc["worst_rel_l2"]) == {"numpy", "torch@channels_last"}  # once each; cudagraphs needs a GPU
    assert doc["modes"] == {"numpy": None, "torch@channels_last": "channels_last"}
    assert doc["worst_rel_l2"]["torch@channels_last"] <= doc["tolerance"] and doc["passed"]
    assert any(note.startswith("torch@cudagraphs skipped: ") for note in doc["notes"])
    assert set(doc["ties"]) == set(doc["worst_rel_l2"]) and "torch@channels_last~reference" in doc["table"]["loss"]

"""The four agreement measures on hand-checked values."""
import numpy as np
import pytest

from fwbench.harness.agreement.metrics import compare, tree_distance


def test_identical_arrays_agree_perfectly():
    a = np.array([1.0, -2.0, 3.0])
    assert compare(a, a) == {"max_abs": 0.0, "rel_l2": 0.0, "rho": 0.0, "cosine": 1.0}
    assert compare(np.zeros(3), np.zeros(3))["rel_l2"] == 0.0


def test_values_by_hand():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 4.0])
    m = compare(a, b)
    assert m["max_abs"] == 4.0
    assert m["rel_l2"] == pytest.approx(5.0 / 4.0)
    assert m["rho"] == pytest.approx(1.0)  # |3-0| / max(1, 3) and |0-4| / max(1, 4)
    assert m["cosine"] == 0.0


def test_rho_uses_one_as_floor_for_small_values():
    m = compare(np.array([0.1]), np.array([0.2]))
    assert m["rho"] == pytest.approx(0.1)
    assert compare(np.array([1.0]), np.array([0.0]))["rel_l2"] == float("inf")


def test_float32_inputs_are_measured_in_float64():
    a = np.float32(1.0) + np.float32(1e-7)
    assert compare(np.array([a], np.float32), np.array([1.0]))["max_abs"] == pytest.approx(1.19e-7, rel=0.01)


def test_tree_distance_is_one_vector():
    a = {"w": np.array([1.0, 0.0]), "b": np.array([0.0])}
    b = {"w": np.array([1.0, 1.0]), "b": np.array([1.0])}
    assert tree_distance(a, b) == pytest.approx(np.sqrt(2.0 / 3.0))

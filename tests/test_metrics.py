"""The four agreement measures on hand-checked values."""
import numpy as np
import pytest

from fwbench.harness.agreement.metrics import ZERO_FLOOR, compare, exact_zeros, gradient_floor, tree_distance


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


def test_floor_divides_when_the_reference_norm_is_smaller():
    assert compare(np.array([3e-3, 4e-3]), np.zeros(2), floor=0.5)["rel_l2"] == pytest.approx(1e-2)
    assert compare(np.array([2.0]), np.array([1.0]), floor=0.5)["rel_l2"] == 1.0  # the larger of the two divides


def test_gradient_floor_and_exact_zeros():
    grads = {"w": np.array([3.0, 4.0]), "zero": np.array([1e-15, -2e-15]), "small": np.array([1e-4])}
    assert gradient_floor(grads, "float64") == pytest.approx(5 * ZERO_FLOOR["float64"])
    assert gradient_floor(grads, "float32") == pytest.approx(5 * ZERO_FLOOR["float32"])
    assert exact_zeros(grads) == ["zero"]  # a real gradient 2e-5 of the largest is not one
    assert exact_zeros({"a": np.zeros(2)}) == []  # all zero: nothing to tell noise from

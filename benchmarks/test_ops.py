"""Micro-benchmarks of the cnn's ops, forward and backward, on every installed backend (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/ --benchmark-only -q   (not part of `make test`)
"""
import pytest

from fwbench import backends
from op_cases import CASES, OPS, arrays

pytest.importorskip("pytest_benchmark")

ROUNDS, WARMUP = 20, 3  # few, fixed rounds: the whole file runs in well under a minute on 2 cores
INPUTS = arrays()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("phase", ["forward", "backward"])
# Innermost, so each framework runs all its cases in a row: a framework's idle worker threads
# then never spin for CPU time while another framework is being timed on the 2 cores.
@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.skipif(
    bool(backends.missing(name)), reason=f"{name} not installed")) for name in CASES])
def test_op(benchmark, op, phase, backend):
    """One op, one direction, one framework; grouped by op and direction so backends sit side by side."""
    benchmark.group = f"{op} {phase}"
    run, setup = CASES[backend](op, phase, INPUTS)
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)

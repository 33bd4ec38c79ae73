"""The conformance kit: a fixed battery that checks a backend against the float64 NumPy reference."""
from fwbench.harness.conformance.checks import BATTERY, Check
from fwbench.harness.conformance.runner import STATUSES, Result, run, run_conformance

__all__ = ["BATTERY", "Check", "Result", "STATUSES", "run", "run_conformance"]

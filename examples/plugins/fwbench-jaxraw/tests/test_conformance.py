"""The fwbench conformance kit against the installed plugin, found by its entry-point name."""
import pytest

from fwbench.harness.conformance import run_conformance


def test_jaxraw_passes_the_conformance_kit(request):
    if request.config.getoption("fwbench_backend", default=None):
        pytest.skip("--fwbench-backend runs the same kit, one test per check")
    report = run_conformance("jaxraw", "cpu")
    failed = [f"{c['name']}: {c.get('detail', '')}" for c in report["checks"] if c["status"] == "fail"]
    assert report["passed"], "\n".join(failed)

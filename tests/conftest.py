"""Shared fixtures: backends parametrized over what is installed, an isolated data cache, the wrong backends."""
import argparse
import importlib
import sys
from pathlib import Path

import pytest

from fwbench import backends
from fwbench.harness.conformance.command import add_arguments, conformance


# Backends that compute one Python scalar at a time (MicrogradBackend.scalar_limit): they refuse
# MNIST-sized training batches, so tests that train on MNIST leave them out.
SCALAR_BACKENDS = {"micrograd"}


def pytest_generate_tests(metafunc):
    """`backend_name` runs once per backend, `trainable_backend` once per MNIST-trainable one; absent ones skip."""
    for fixture, names in [("backend_name", backends.names()),
                           ("trainable_backend", [n for n in backends.names() if n not in SCALAR_BACKENDS])]:
        if fixture in metafunc.fixturenames:
            params = [pytest.param(name, marks=pytest.mark.skipif(bool(backends.missing(name)),
                                                                  reason=f"{name} not installed"))
                      for name in names]
            metafunc.parametrize(fixture, params)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the tests' MNIST cache out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("FWBENCH_DATA", raising=False)
        yield


@pytest.fixture(scope="session")
def wrong_dir() -> Path:
    """The folder of wrongmod.py, for a subprocess's PYTHONPATH."""
    return Path(__file__).resolve().parent


@pytest.fixture
def wrong(wrong_dir, monkeypatch):
    """The wrongmod module, freshly imported (for module:Class paths too) while the test runs."""
    monkeypatch.syspath_prepend(str(wrong_dir))
    sys.modules.pop("wrongmod", None)
    yield importlib.import_module("wrongmod")
    sys.modules.pop("wrongmod", None)


@pytest.fixture
def cli():
    """`fwbench conformance ARGV` in this process; returns its exit code."""
    def run(argv: list[str]) -> int:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return conformance(parser.parse_args(argv))
    return run

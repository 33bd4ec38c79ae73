"""Shared fixtures: backends parametrized over what is installed, and an isolated data cache."""
import pytest

from fwbench import backends


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

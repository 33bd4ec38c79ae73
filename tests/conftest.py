"""Shared fixtures: backends parametrized over what is installed, and an isolated data cache."""
import pytest

import backends


def pytest_generate_tests(metafunc):
    """`backend_name` runs once per backend, skipped (not failed) where its framework is absent."""
    if "backend_name" in metafunc.fixturenames:
        params = [pytest.param(name, marks=pytest.mark.skipif(bool(backends.missing(name)),
                                                              reason=f"{name} not installed"))
                  for name in backends.names()]
        metafunc.parametrize("backend_name", params)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the tests' MNIST cache out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("FWBENCH_DATA", raising=False)
        yield

"""The kit's data-parallel section: only for backends that declare it, and it catches an unweighted mean of slices."""


from fwbench.backends.base import BackendError
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.conformance import run_conformance


class MeanOfMeans(NumpyBackend):
    """Two workers whose gradient is the plain mean of the slices' means: right only when the slices are equal."""

    data_parallel = True
    workers = 2

    def loss_and_grads(self, x, y):
        if len(x) < 2:
            raise BackendError("cannot split a batch of 1")  # refused: the row says "not supported"
        half = (len(x) + 1) // 2
        parts = [NumpyBackend.loss_and_grads(self, x[s], y[s]) for s in (slice(0, half), slice(half, None))]
        return (parts[0][0] + parts[1][0]) / 2, {k: (parts[0][1][k] + parts[1][1][k]) / 2 for k in parts[0][1]}

    def replicas_identical(self):
        return True




def rows(name: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in run_conformance(name)["checks"]}


def test_an_unweighted_mean_of_uneven_slices_fails_and_even_ones_pass():
    found = rows(f"{__name__}:MeanOfMeans")
    assert found["data-parallel/a batch the workers divide"] == "pass"
    assert found["data-parallel/a batch they do not divide"] == "fail"
    assert found["data-parallel/a batch of 1"] == "not supported"


def test_a_backend_that_is_not_data_parallel_has_no_such_rows():
    assert not [name for name in rows("numpy") if name.startswith("data-parallel/")]

"""The engine's worker threads: the same numbers as one thread, exactly on small integers and for elementwise work."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fwbench.backends.engine import (Tensor, avgpool2d, batchnorm, conv2d, dense, maxpool2d, parallel, relu, sigmoid,
                                     tanh)
from fwbench.backends.engine.optim import Adam


@pytest.fixture
def two_workers(monkeypatch):
    """Two workers, and work of any size handed to them."""
    monkeypatch.setattr(parallel, "PARALLEL_FLOPS", 0)
    monkeypatch.setattr(parallel, "HALVES_FLOPS", 0)
    parallel.configure(2)
    yield
    parallel.configure(1)


@contextlib.contextmanager
def workers_restored():
    """The test's own worker counts, and afterwards the count that was configured before it."""
    workers = parallel.threads()
    try:
        yield
    finally:
        parallel.configure(workers)


def test_workers_shorten_the_switch_interval_and_one_worker_restores_it():
    with workers_restored():
        parallel.configure(1)
        before = sys.getswitchinterval()
        parallel.configure(2)
        assert sys.getswitchinterval() == pytest.approx(parallel.SWITCH_INTERVAL)
        parallel.configure(1)
        assert sys.getswitchinterval() == before


def run_conv(x, w, b, **kw):
    for t in (x, w, b):
        t.zero_grad()
    out = conv2d(x, w, b, 1, (1, 0, 2, 1), **kw)
    r = np.random.default_rng(1).integers(-2, 3, out.shape).astype(out.dtype)
    (out * Tensor(r)).sum().backward()
    return out.data, x.grad, w.grad, b.grad


@pytest.mark.parametrize("channels", [2, 16])  # im2col channel-major and pixel-major; col2im and the transposed conv
@pytest.mark.parametrize("pool", [None, (2, 2), (3, 2)])
@pytest.mark.parametrize("processes", [False, True])
def test_conv_on_two_workers_equals_one_worker(channels, pool, processes, two_workers, monkeypatch):
    from fwbench.backends.engine import conv
    monkeypatch.setattr(conv, "SLICE_BYTES", 1)  # a slice per image: five slices dealt to two workers
    monkeypatch.setattr(parallel, "REMOTE_FLOPS", 0)
    parallel.configure(2, processes=processes and parallel.PROCESSES)
    rng = np.random.default_rng(0)
    shapes = [(5, 7, 6, channels), (3, channels, 3, 3), (3,)]
    leaves = [Tensor(rng.integers(-1, 2, s).astype(np.float32), True) for s in shapes]
    two = run_conv(*leaves, relu=True, pool=pool and ("max", *pool))
    parallel.configure(1)
    one = run_conv(*leaves, relu=True, pool=pool and ("max", *pool))
    for got, want in zip(two, one):  # small integers: every sum is exact, whatever its order
        np.testing.assert_array_equal(got, want)


def test_dense_split_between_workers_equals_one_product(two_workers):
    rng = np.random.default_rng(2)
    x, w, b = (Tensor(rng.integers(-3, 4, s).astype(np.float32), True) for s in [(7, 5), (5, 4), (4,)])
    out = dense(x, w, b, relu=True)
    out.sum().backward()
    np.testing.assert_array_equal(out.data, np.maximum(x.data @ w.data + b.data, 0))
    np.testing.assert_array_equal(w.grad, x.data.T @ (out.data > 0).astype(np.float32))


@pytest.mark.parametrize("lend", [True, False])  # BLAS's threads for the call, or a slice of rows per worker
def test_matmul_on_two_workers_equals_one_product_and_gives_blas_back(lend, two_workers, monkeypatch):
    from threadpoolctl import threadpool_info
    monkeypatch.setattr(parallel, "BLAS_THREADS_SLEEP", lend)
    rng = np.random.default_rng(4)
    a, b = rng.integers(-3, 4, (9, 70)).astype(np.float32), rng.integers(-3, 4, (70, 33)).astype(np.float32)
    lent = []
    if lend:  # BLAS must see two threads during the call
        monkeypatch.setattr(parallel, "_blas", [type("Spy", (), {"set_num_threads": lambda self, n: lent.append(n)})()])
    np.testing.assert_array_equal(parallel.matmul(a, b), a @ b)
    np.testing.assert_array_equal(parallel.matmul(a.T.copy().T, b[:, 3:]), a @ b[:, 3:])  # strided operands
    assert lent == ([2, 1] * 2 if lend else [])
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}  # every BLAS loaded


@pytest.mark.parametrize("first,env,sleeps", [("", {}, "True 20"), ("", {"OPENBLAS_THREAD_TIMEOUT": "8"}, "False 8"),
                                              ("import numpy; ", {}, "False None")])
def test_blas_threads_sleep_only_where_fwbench_set_it_before_numpy(first, env, sleeps):
    code = (f"import os; {first}import fwbench; "
            "print(fwbench.BLAS_THREADS_SLEEP, os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=60)
    assert done.stdout.split() == sleeps.split(), done.stderr


def test_adam_on_two_workers_equals_one_bit_for_bit(two_workers, monkeypatch):
    from fwbench.backends.engine import optim
    monkeypatch.setattr(optim, "CHUNK", 5)
    monkeypatch.setattr(optim, "SHARE_FROM", 1)
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(23).astype(np.float32) for _ in range(20)]
    results = []
    for workers in (2, 1):
        parallel.configure(workers)
        p = np.ones(23, np.float32)
        opt = Adam([p], lr=1e-2)
        for g in grads:
            opt.step([g])
        results.append(p)
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("size, shared", [(99, False), (100, True)])
def test_adam_shares_an_array_from_share_from_elements(size, shared, monkeypatch):
    import threading
    from fwbench.backends.engine import optim
    monkeypatch.setattr(optim, "CHUNK", 10)
    monkeypatch.setattr(optim, "SHARE_FROM", 100)
    names = set()
    update = optim.Adam._update

    def spy(self, *args):
        names.add(threading.current_thread().name)
        return update(self, *args)
    monkeypatch.setattr(optim.Adam, "_update", spy)
    with workers_restored():
        parallel.configure(2)
        Adam([np.ones(size, np.float32)], lr=1e-2).step([np.ones(size, np.float32)])
    assert len(names) == (2 if shared else 1)


@pytest.mark.parametrize("work, shared", [(parallel.HALVES_FLOPS - 1, False), (parallel.HALVES_FLOPS, True)])
def test_halves_shares_elementwise_work_from_halves_flops(work, shared):
    import threading
    names = []
    with workers_restored():
        parallel.configure(2)
        parallel.halves(lambda s: names.append(threading.current_thread().name), 64, work)
    assert len(set(names)) == (2 if shared else 1)


def test_one_worker_leaves_blas_alone():
    from threadpoolctl import threadpool_info
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    parallel.configure(2)
    held = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    parallel.configure(1)
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert held == [1] * len(before) and after == before


LAYER_OPS = {
    "batchnorm": lambda t, p: batchnorm(t, *p, 1e-5, (np.zeros(3, np.float32), np.ones(3, np.float32)), True, 0.1),
    "maxpool": lambda t, p: maxpool2d(t, 3, 2), "avgpool": lambda t, p: avgpool2d(t, 2),
    "relu": lambda t, p: relu(t), "tanh": lambda t, p: tanh(t), "sigmoid": lambda t, p: sigmoid(t)}


@pytest.mark.parametrize("name", LAYER_OPS)
def test_elementwise_layers_on_two_workers_equal_one_worker(name, two_workers):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5, 6, 3)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)  # the output's gradient, cut to its shape

    def run():
        t = Tensor(x.copy(), True)
        p = (Tensor(np.full(3, 1.5, np.float32), True), Tensor(np.full(3, 0.5, np.float32), True))
        out = LAYER_OPS[name](t, p)
        (out * Tensor(r[tuple(slice(0, d) for d in out.shape)])).sum().backward()
        return out.data, t.grad, p[0].grad, p[1].grad
    two = run()
    parallel.configure(1)
    for got, want in zip(two, run()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n, step, sizes", [
    (64, 9, [8] * 8),  # not seven of 9 and one of 1: runs of 36 and 28 images on two workers
    (64, 33, [32, 32]),
    (64, 100, [64]),  # one slice stays whole
    (11, 2, [2] * 5 + [1]),
    (9, 4, [3, 2, 2, 2]),  # four, a whole number a worker, not three
    (3, 1, [1, 1, 1]),
    (0, 4, []),
])
def test_slices_are_even_and_a_whole_number_a_worker(n, step, sizes, two_workers):
    got = parallel.slices(n, step)
    assert [s.stop - s.start for s in got] == sizes
    assert all(a.stop == b.start for a, b in zip(got, got[1:])) and (not got or (got[0].start, got[-1].stop) == (0, n))


def test_one_worker_takes_as_few_slices_as_fit():
    assert [s.stop - s.start for s in parallel.slices(9, 4)] == [3, 3, 3]
    assert [s.stop - s.start for s in parallel.slices(10, 4)] == [4, 3, 3]


def test_runs_are_consecutive_slices_one_a_worker_at_least(two_workers):
    from fwbench.backends.engine import epilogue
    slices = parallel.slices(11, 2)
    runs = epilogue.runs_of(slices, 1)
    assert [epilogue.images(run) for run in runs] == [slice(0, 6), slice(6, 11)]
    assert [s for run in runs for s in run] == slices
    assert len(epilogue.runs_of(slices, epilogue.RUN_BYTES)) == 6  # an image of RUN_BYTES: a run a slice

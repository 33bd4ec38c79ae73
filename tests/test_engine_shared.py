"""The engine's shared memory and its worker process: arrays passed by reference, blocks reused, failures raised."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from fwbench.backends.engine import parallel, remote, shared

pytestmark = pytest.mark.skipif(not parallel.PROCESSES, reason="worker processes need Linux's memfd")


def test_a_freed_block_serves_the_next_array_of_its_size():
    arena = shared.Arena()
    a = arena.empty((3, 5), np.float32)
    address = a.__array_interface__["data"][0]
    view = a[1:]
    del a
    assert arena.empty(15, np.float32).__array_interface__["data"][0] != address  # its view keeps it alive
    del view
    b = arena.empty((5, 3), np.float32)
    assert b.__array_interface__["data"][0] == address and b.shape == (5, 3) and b.dtype == np.float32


def test_a_larger_free_block_serves_a_new_size_up_to_twice_smaller():
    arena = shared.Arena()
    big = arena.empty(3 * shared.PAGE, np.uint8)
    address = big.__array_interface__["data"][0]
    del big
    assert arena.empty(2 * shared.PAGE, np.uint8).__array_interface__["data"][0] == address
    assert arena.empty(shared.PAGE, np.uint8).__array_interface__["data"][0] != address  # 3x: not taken


def test_arrays_beyond_a_segment_get_segments_of_their_own(monkeypatch):
    monkeypatch.setattr(shared, "SEGMENT_BYTES", 4 * shared.PAGE)
    arena = shared.Arena()
    arrays = [arena.empty(3 * shared.PAGE, np.uint8), arena.empty(9 * shared.PAGE, np.uint8)]
    assert len(arena.segments) == 2 and all(arena.holds(a) for a in arrays)
    assert not arena.holds(np.empty(3)) and not arena.holds(arena.empty(0, np.float32))


def test_arrays_in_the_arena_pickle_by_reference_and_others_by_value():
    arena = shared.Arena()
    inside = arena.empty((40, 60), np.float32)
    inside[...] = np.arange(2400).reshape(40, 60)
    outside = np.arange(5.0)
    # Any view: strided, transposed, reversed.
    job = {"t": inside.T, "s": inside[::2, 1::3], "r": inside[::-1], "o": outside, "np": np}
    data = shared.dumps(job, arena)
    got = shared.Mapper(os.getpid()).loads(data)  # this process's own descriptors stand in for the parent's
    for key in ("t", "s", "r"):
        np.testing.assert_array_equal(got[key], job[key])
    np.testing.assert_array_equal(got["o"], outside)
    assert got["np"] is np
    got["t"][0, 0] = -1  # the same memory
    assert inside[0, 0] == -1
    got["o"][0] = -1  # a copy
    assert outside[0] == 0
    assert len(data) < 2048 < inside.nbytes  # not copied into the pickle


def fill(a: np.ndarray, value: float) -> float:
    a[...] = value
    return float(a.sum())


def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def worker():
    arena = shared.Arena()
    w = remote.Worker(arena)
    yield w, arena
    w.close()
    assert w.process.poll() is not None  # it exited


def test_the_worker_writes_into_the_arena_and_returns_by_value(worker):
    w, arena = worker
    a = arena.empty((3, 4), np.float32)
    a[...] = 0
    w.submit(fill, a[:, 1:], 2.0)
    assert w.result() == 18.0
    np.testing.assert_array_equal(a, np.array([[0, 2, 2, 2]] * 3, np.float32))


def test_the_workers_exception_is_raised_with_its_traceback(worker):
    w, _ = worker
    w.submit(fail, "no such thing")
    with pytest.raises(RuntimeError, match="(?s)worker process.*ValueError: no such thing"):
        w.result()
    w.submit(fill, np.zeros(2), 1.0)  # and it serves the next job
    assert w.result() == 2.0


def test_a_dead_worker_is_an_error_not_a_hang(worker):
    w, _ = worker
    w.submit(os._exit, 3)
    with pytest.raises(RuntimeError, match="died"):
        w.result()


def test_configure_starts_and_stops_the_worker_processes():
    workers = parallel.threads()
    try:
        parallel.configure(1)
        parallel.configure(2, processes=True)
        started = list(parallel._remote)
        assert parallel.processes() and len(started) == 1 and parallel.placed(parallel.empty(3, np.float32))
        assert not parallel.placed(np.empty(3)) and parallel.placed(parallel.shareable(np.empty(3)))
        parallel.configure(2, processes=False)
        assert not parallel.processes() and started[0].process.wait(timeout=10) is not None
        assert parallel.placed(np.empty(3))  # no arena: every array will do
    finally:
        parallel.configure(1)
        parallel.configure(workers)


def test_the_worker_process_runs_the_interpreter_and_package_of_its_parent(worker):
    w, _ = worker
    w.submit(eval, "__import__('sys').executable, __import__('fwbench').__file__")
    import fwbench
    assert w.result() == (sys.executable, fwbench.__file__)


def test_the_worker_process_ignores_a_package_of_the_same_name_where_it_starts(tmp_path, monkeypatch):
    (tmp_path / "fwbench").mkdir()
    (tmp_path / "fwbench" / "__init__.py").write_text("raise ImportError('the wrong fwbench')\n")
    monkeypatch.chdir(tmp_path)  # python -c would put it first on the worker's path
    arena = shared.Arena()
    w = remote.Worker(arena)
    try:
        w.submit(eval, "__import__('fwbench').__file__")
        import fwbench
        assert w.result(timeout=60) == fwbench.__file__
    finally:
        w.close()


def test_workers_that_cannot_start_leave_threads_with_a_warning(monkeypatch):
    def refuse(arena):
        raise OSError("no memfd here")
    monkeypatch.setattr(remote, "Worker", refuse)
    workers = parallel.threads()
    try:
        parallel.configure(1)
        with pytest.warns(RuntimeWarning, match=r"worker processes did not start \(no memfd here\); it uses threads"):
            parallel.configure(2, processes=True)
        assert parallel.threads() == 2 and not parallel.processes()
    finally:
        parallel.configure(1)
        parallel.configure(workers)


@pytest.mark.filterwarnings("ignore:os.fork")  # the child only writes a byte and leaves
def test_a_forked_child_forgets_its_parents_workers():
    workers = parallel.threads()
    try:
        parallel.configure(1)
        parallel.configure(2, processes=True)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            os.write(write, b"%d" % parallel.processes())
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"0" and parallel.processes()
    finally:
        parallel.configure(1)
        parallel.configure(workers)


def test_the_worker_reports_its_own_memory(worker):
    w, arena = worker
    a = arena.empty(8 << 20, np.uint8)
    w.submit(np.copyto, a, 1)  # shared pages it touches: the parent's to count
    w.result()
    own = w.peak_rss_mb()
    assert 5 < own < 200  # an interpreter with NumPy, not the 8 MiB it wrote into shared memory twice over


def test_stopping_waits_for_the_workers_so_that_their_cpu_time_is_this_processs():
    # A bench reads the CPU time of the cell's process and its children as the cell's own: a worker left to exit
    # unwaited-for would be "other processes" there, and every NumPy cell would read as contended.
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    workers = parallel.threads()
    try:
        parallel.configure(1)
        parallel.configure(2, processes=True)
        before = children_cpu()
        parallel._remote[0].submit(sum, range(20_000_000))  # a few tenths of a second of CPU
        parallel._remote[0].result()
        parallel._stop()
        assert children_cpu() - before > 0.1 and not parallel.processes()
    finally:
        parallel.configure(1)
        parallel.configure(workers)


@pytest.mark.parametrize("out_channels, remote", [(2, False), (8, True)])
def test_a_conv_goes_to_the_processes_from_remote_flops_of_forward_work(out_channels, remote, monkeypatch):
    from fwbench.backends.engine import Tensor, conv2d
    # 4 images of 6 x 6, 3 -> O channels, 3 x 3, padding 1: O * 144 output values, each 2 * 27 FLOPs and 50 for the
    # value: 104 * 144 * O, 29,952 for O = 2 and 119,808 for O = 8.
    monkeypatch.setattr(parallel, "REMOTE_FLOPS", 60_000)
    monkeypatch.setattr(parallel, "PARALLEL_FLOPS", 0)
    seen = []
    share = parallel.share

    def spy(*args, remote=False):
        seen.append(remote)
        return share(*args, remote=remote)
    monkeypatch.setattr(parallel, "share", spy)
    workers = parallel.threads()
    try:
        parallel.configure(1)
        parallel.configure(2, processes=True)
        rng = np.random.default_rng(0)
        x = Tensor(rng.standard_normal((4, 6, 6, 3)).astype(np.float32), True)
        w = Tensor(rng.standard_normal((out_channels, 3, 3, 3)).astype(np.float32), True)
        b = Tensor(np.zeros(out_channels, np.float32), True)
        conv2d(x, w, b, 1, 1, relu=True).sum().backward()
        assert seen == [remote, remote]  # forward and backward alike
        assert not remote or parallel.placed(x.grad)  # what the process wrote is in shared memory
    finally:
        parallel.configure(1)
        parallel.configure(workers)


def test_a_worker_that_does_not_answer_is_given_up(worker):
    w, _ = worker
    w.submit(time.sleep, 30)
    with pytest.raises(RuntimeError, match="did not answer within 0.2 s"):
        w.result(timeout=0.2)
    assert w.process.wait(timeout=10) is not None  # killed

"""Workers for an op's independent slices (threads; processes for the convs): NumPy's own loops run on one core."""
from __future__ import annotations

import atexit
import contextlib
import operator
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Sequence

import numpy as np

from fwbench import BLAS_THREADS_SLEEP
from fwbench.backends.engine.xp import module_of

# NumPy releases the GIL in its copies, ufunc loops and BLAS calls, so threads that take turns over slices of a
# batch keep every core busy, where a single thread leaves the im2col copies, masks and pools on one core. BLAS then
# runs one thread in each, for good: two threads each on two cores only contend, and OpenBLAS's own threads keep
# spinning for a while after each of its calls. Measured on the 2-core reference CPU, pyex's second conv forward:
# 30 ms on one thread (two-thread BLAS), 17-24 ms on two (one-thread BLAS), 34 ms on two right after a two-thread
# BLAS call.
_pool: ThreadPoolExecutor | None = None
_workers = 1
_limit = None  # threadpoolctl's hold of NumPy's BLAS at one thread, while there are workers
_remote: list = []  # worker processes (remote.py) for the ops that can hand them their work; worker w is _remote[w - 1]
_arena = None  # the shared memory those ops' arrays live in, while there are worker processes
_handed = False  # whether an op has handed work to them since they started (output() then uses _arena)
_alone = False  # inside alone(): this process runs its ops by itself, the worker processes being replicas
_blas: list = []  # its controllers of that BLAS, through which matmul lends BLAS the workers' cores for one call
# While there are workers, a thread waiting for the GIL asks its holder for it after this long, not CPython's 5 ms.
# A worker back from a short NumPy call (tens of microseconds) finds the GIL taken by the other, whose calls are
# shorter than this machine's wake-up of a sleeping thread (~76 us), and may wait out the whole interval: two threads
# of 64K-float adds ran at 0.26-1.96x one thread's throughput, varying from run to run. Measured here, steps in fresh
# processes against 5 ms, 4-8 alternating rounds: vgg 0.87-1.0x the time (five runs, median 0.97), strided and wide7
# 0.97-0.98x, pyex 0.90x, cnn 0.97x; mlp and dmlp, whose workers get no work, 0.93-1.08x (noise).
SWITCH_INTERVAL = 1e-4
_switch = None  # the interpreter's own interval, restored with one worker
# Work is handed to the workers from this many FLOPs: below it, the hand-off (tens of microseconds) costs more than
# it saves. The mlp's whole step is 1.3 ms, and split at 4 M FLOPs it took 2.4.
PARALLEL_FLOPS = 16_000_000
# halves() shares elementwise work from this much: below it, the hand-off and the GIL (an op's calls of a few tens of
# microseconds on two threads) cost more than a second core saves. An op's forward and backward on two workers
# against one, 20 alternating rounds in one process (work in brackets): relu on 401K values 1.18x the time (80 M), on
# 1.6M 0.79x (320 M); a 3 x 3 stride-2 max pool of 401K values 1.14x (180 M), of 1.6M 0.70x; the same avg pool 1.32x
# and 0.73x; tanh on 200K 1.00x (120 M), on 401K 0.83x (240 M); sigmoid on 200K 1.27x (80 M), on 401K 0.89x (160 M).
HALVES_FLOPS = 200_000_000
# A value that a copy or an elementwise pass reads or writes costs about as long as this many FLOPs of GEMM on the
# reference CPU (~1 G values/s against ~50 GFLOP/s a thread): work counts both.
VALUE_FLOPS = 50
# The ops that can (conv2d's slices) hand their work to worker processes rather than threads where the platform has
# memfd: two threads' NumPy calls wait on each other for the GIL, two processes' do not. Measured here, Winograd's
# conv of vgg's 16 channels over half a batch, forward and backward on one thread each: 4.5-5.1 ms in two processes
# at once, 7.1-7.6 in two threads of one process (5.0-5.4 alone).
PROCESSES = sys.platform == "linux" and hasattr(os, "memfd_create")
# A conv hands its shares to the worker processes from this much forward work (its FLOPs and VALUE_FLOPS for each
# value of its output, which its activation and pool pass over); below it, to the threads. A hand-off to a process
# costs 0.2-0.4 ms here (pickling the job, waking the process, its reply), to a thread tens of microseconds, but the
# GIL costs threads more on large shares. Steps in fresh processes, 4 alternating rounds, against threads: vgg 0.90x
# and 0.91x, flaxex 0.94x and 0.97x, strided 0.97x, tgmnist 0.98x, wide7 1.00x; lenet5, sigm and cnn, whose convs
# stay on the threads, 0.98-1.06x over three runs (noise). Every conv that is shared at all on processes (16 M):
# flaxex 0.93x, lenet5 1.04x, sigm 1.02x (6 rounds).
REMOTE_FLOPS = 100_000_000
# The numpy backend may split a training step by images over the worker processes, where every worker is one
# (backends/numpy_split.py): each runs the whole step on its share alone, and they meet only where the batch is
# summed over (replica.py). Sharing each op's work instead costs a hand-off an op, and threads the GIL. The engine's
# steps split, against each op shared, 3 alternating rounds in fresh processes: cnn 0.75x, lenet5 0.73x, sigm 0.72x,
# tgmnist 0.77x, strided 0.78x, vgg 0.83x, overlap 0.86x, pyex and flaxex 0.93x (benchmarks/engine_workers.py).
# False: every step's ops share their own work, as evaluation's do.
DATA_PARALLEL = True
# A worker process that has not answered its first job (it imports NumPy and fwbench) in this long is given up, and
# the engine uses threads.
STARTUP_SECONDS = 60


def configure(workers: int, processes: bool | None = None) -> None:
    """Run sliced work on this many workers from now on, BLAS on one thread in each; 1: as NumPy alone runs.

    processes: whether the ops that can run their share in worker processes do (default PROCESSES); the others, and
    those ops where there are none, use threads."""
    global _pool, _workers, _limit, _blas, _switch, _remote, _arena, _handed
    processes = PROCESSES if processes is None else processes
    if workers == _workers and bool(_remote) == (processes and workers > 1):
        return
    if _pool is not None:
        _pool.shutdown()
    for worker in _remote:
        worker.close()
    if _arena is not None:
        _arena.close()
    _remote, _arena, _handed = [], None, False
    if _limit is not None:
        _limit.restore_original_limits()
    if _switch is not None:
        sys.setswitchinterval(_switch)
        _switch = None
    # The calling thread is worker 0: the pool holds the others.
    _pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="engine") if workers > 1 else None
    _workers, _limit, _blas = workers, None, []
    if workers > 1 and processes:
        _arena, _remote = _start(workers - 1)
    if workers > 1:
        _switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # BLAS then keeps its own threads: the same results, only slower
            return
        controller = ThreadpoolController().select(user_api="blas")
        _limit, _blas = controller.limit(limits=1), controller.lib_controllers


def _start(count: int) -> tuple[object, list]:
    """An arena and `count` worker processes that write into it; (None, []) where they cannot start: threads then."""
    from fwbench.backends.engine import remote, shared
    arena, started = shared.Arena(), []
    try:
        for _ in range(count):
            started.append(remote.Worker(arena))
            probe = arena.empty(1, np.int64)
            probe[0] = 0
            started[-1].submit(operator.setitem, probe, 0, 1)  # the worker maps the arena and writes into it
            started[-1].result(timeout=STARTUP_SECONDS)
            if probe[0] != 1:
                raise RuntimeError("its write did not arrive")
    except (OSError, RuntimeError) as e:
        for worker in started:
            worker.close()
        arena.close()
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        warnings.warn(f"the NumPy engine's worker processes did not start ({reason}); it uses threads instead",
                      RuntimeWarning, stacklevel=3)
        return None, []
    return arena, started


def _forget_in_child() -> None:
    """In a forked child: the parent's worker processes and shared memory are the parent's; threads from now on."""
    global _remote, _arena, _handed
    _remote, _arena, _handed = [], None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def _stop() -> None:
    """Stop the worker processes and wait for them: their CPU time is then this process's children's (a bench cell's
    own, in the contention reading of the bench around it), and none outlives this one. Threads from then on."""
    global _remote, _handed
    for worker in _remote:
        worker.close()
    _remote, _handed = [], False


def processes() -> bool:
    """Whether there are worker processes."""
    return bool(_remote)


def processes_peak_rss_mb() -> list[float]:
    """Each worker process's own memory high-water mark, in MiB (see remote.Worker.peak_rss_mb)."""
    return [m for m in (worker.peak_rss_mb() for worker in _remote) if m is not None]


def remote(flops: float) -> bool:
    """Whether work of this size goes to the worker processes (there are some, and it is at least REMOTE_FLOPS)."""
    return bool(_remote) and not _alone and flops >= REMOTE_FLOPS


def replicas() -> list:
    """The worker processes that may each take a share of a training step's images (remote.Worker); [] for none."""
    return list(_remote) if DATA_PARALLEL and len(_remote) == _workers - 1 and not _alone else []


@contextlib.contextmanager
def alone():
    """Within it, every op runs in the calling thread alone: the other cores run replicas of the step."""
    global _alone
    _alone = True
    try:
        yield
    finally:
        _alone = False


def empty(shape, dtype, xp=np) -> np.ndarray:
    """xp.empty, in the worker processes' shared memory when there are any: for arrays a remote share writes."""
    return xp.empty(shape, dtype=dtype) if _arena is None or xp is not np else _arena.empty(shape, dtype)


def placed(a) -> bool:
    """Whether a worker process would see array a, and what it writes there: always, where there are none."""
    return _arena is None or module_of(a) is not np or _arena.holds(a)


# output() makes an op's output in shared memory from this size, where there are worker processes: a conv that hands
# its input (or its output's gradient) to them then reads it where it lies. Copied there instead, flaxex's second
# conv's input (5.5 MB) took longer than the process saved.
SHARED_FROM = 1 << 16


def output(shape, dtype, xp=np):
    """xp.empty(shape, dtype); in shared memory from SHARED_FROM bytes, once a conv has handed work to the processes."""
    # Only then: shared memory has no transparent huge pages here, and a spec whose convs all stay on the threads
    # (wide7, sigm) ran 1.02-1.03x as long with every large output there.
    if not _handed or _alone or xp is not np or int(np.prod(shape)) * np.dtype(dtype).itemsize < SHARED_FROM:
        return xp.empty(shape, dtype=dtype)
    return _arena.empty(shape, dtype)


def shareable(a):
    """a, or a copy of it in shared memory where there are worker processes and it is not there: a share's input."""
    if placed(a) or a.size == 0:
        return a
    copy = _arena.empty(a.shape, a.dtype)
    copy[...] = a
    return copy


def threads() -> int:
    """The workers sliced work runs on."""
    return _workers


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def slices(n: int, step: int, xp=np) -> list[slice]:
    """Consecutive slices of n items, at most `step` each, as even as can be; one of all n off the CPU."""
    if xp is not np or n == 0:
        return [slice(0, n)] if n else []
    count = -(-n // max(1, step))
    # More than one slice: as many as a whole number a worker, since workers take them round-robin. 64 images in
    # 9s were 7 slices of 9 and one of 1, and runs of 36 and 28 images: vgg's step took 0.97x as long in 8 slices
    # of 8 (6 alternating rounds); the other specs within noise. A single slice stays whole: the work is small.
    if count > 1:
        count = min(n, -(-count // _workers) * _workers)
    size, longer = divmod(n, count)
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def workers(items: int) -> int:
    """How many workers share `items` slices: at most one each."""
    return max(1, min(_workers, items))


def share(fn: Callable[[int, Sequence], object], items: Sequence, flops: float, remote: bool = False) -> list:
    """fn(worker, its items) for each worker, items dealt round-robin; the results in worker order.

    remote: fn runs in the worker processes, where there are any (see remote()): it and its arguments pickle
    (shared.dumps), and every array it writes was made by empty() (what it reads and is not there is copied).
    flops: the whole work's, roughly; below PARALLEL_FLOPS it all runs in the calling thread. Worker w always gets
    items w, w + n, w + 2n, ..., so anything a worker sums is summed in the same order every call: the results are
    deterministic for a given number of workers and size of work."""
    global _handed
    n = workers(len(items)) if flops >= PARALLEL_FLOPS else 1
    if n == 1 or _pool is None or _alone:
        return [fn(0, items)]
    if remote and _remote:
        _handed = True
        for w in range(1, n):
            _remote[w - 1].submit(fn, w, items[w::n])
        try:
            first = fn(0, items[::n])
        finally:
            # Every worker's result is taken, even when this one failed: none may still write into the op's arrays.
            results = [_collect(_remote[w - 1]) for w in range(1, n)]

        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [first, *results]
    # The calling thread works as worker 0 rather than wait: handing every share to the pool and waiting for all of
    # them took 105-125 us a call here, handing out all but its own 30-40 us (a thread woken is a thread waited for).
    futures = [_pool.submit(fn, w, items[w::n]) for w in range(1, n)]
    try:
        first = fn(0, items[::n])
    finally:
        wait(futures)  # no worker may still write into the op's arrays when it returns or raises
    return [first, *(f.result() for f in futures)]


def _collect(worker):
    """A worker process's result, or the exception it raised."""
    try:
        return worker.result()
    except RuntimeError as e:
        return e


def value_work(a, passes: float) -> float:
    """The work, in FLOPs, of `passes` elementwise passes over array a; 0 off the CPU, where nothing is shared."""
    return passes * a.size * VALUE_FLOPS if module_of(a) is np else 0


def halves(fn: Callable[[slice], object], n: int, work: float) -> None:
    """fn(s) over n items (images) cut into one contiguous slice per worker; one call of all n below HALVES_FLOPS.

    work: the whole job's, in FLOPs (VALUE_FLOPS a value). For elementwise passes over a batch: one large
    call each, since many small calls on two threads are slower than on one (each waits for the GIL: ten thousand
    float adds took 0.4-0.7x the time on two threads, a million 1.3-1.6x)."""
    n_workers = workers(n) if work >= HALVES_FLOPS else 1
    bounds = [n * w // n_workers for w in range(n_workers + 1)]
    share(lambda _, mine: [fn(s) for s in mine], [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])], work)


def matmul(a, b, out=None):
    """a @ b for 2-D a and b (into out, when given), on every worker's core when it is large enough to pay."""
    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    if _pool is None or _alone or flops < PARALLEL_FLOPS or module_of(a) is not np:
        return module_of(a).matmul(a, b, out=out)
    if _blas and BLAS_THREADS_SLEEP:
        return _on_blas_threads(a, b, out)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    n = workers(a.shape[0])
    bounds = [a.shape[0] * w // n for w in range(n + 1)]
    parts = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def work(_: int, mine: Sequence[slice]) -> None:
        for p in mine:
            np.matmul(a[p], b, out=out[p])
    share(work, parts, flops)
    return out


def _on_blas_threads(a, b, out=None):
    """a @ b (into out, when given) with BLAS on as many threads as there are workers, for this call only."""
    # A dense layer's GEMM has few rows (the batch). Cut into a slice of rows per worker, each slice ran almost as
    # slowly as the whole (32 of 64 rows: 80% of the time on one thread), and BLAS's own split ran 1.2-1.6x faster
    # than ours on the GEMMs of a 784-512-512-10 mlp. Only where its idle threads sleep at once (fwbench/__init__.py):
    # left spinning, they slowed the conv ops that follow (pyex's step 1.37x, flaxex's 1.25x).
    for blas in _blas:
        blas.set_num_threads(_workers)
    try:
        return np.matmul(a, b, out=out)
    finally:
        for blas in _blas:
            blas.set_num_threads(1)

"""A training step split by images over the worker processes: the same numbers as one process, and its failures."""
from __future__ import annotations

import numpy as np
import pytest

from fwbench import models
from fwbench.backends.base import OptimizerConfig
from fwbench.backends.engine import mailbox, parallel, replica
from fwbench.backends import numpy_split as split
from fwbench.backends.numpy_backend import NumpyBackend

pytestmark = pytest.mark.skipif(not parallel.PROCESSES, reason="the engine's worker processes need Linux's memfd")

SPEC = models.parse({"name": "split", "input": [1, 8, 8], "classes": 4, "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d", "size": 2},
    {"type": "flatten"}, {"type": "dropout", "rate": 0.25}, {"type": "dense", "units": 6}, {"type": "batchnorm"},
    {"type": "tanh"}, {"type": "dense", "units": 4}]})


@pytest.fixture
def replicas(monkeypatch):
    """Two workers, both processes: a step of any size is split between this process and the worker process."""
    monkeypatch.setattr(parallel, "DATA_PARALLEL", True)
    monkeypatch.setattr(split, "SPLIT_FLOPS", 0)
    parallel.configure(1)
    parallel.configure(2, processes=True)
    if not parallel.replicas():
        pytest.skip("the worker process did not start")
    yield
    parallel.configure(1)


def batch(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), rng.integers(0, 4, n)


def run(split: bool, n: int, dtype: str, steps: int = 3, masks: bool = False):
    """Gradients of a first batch, then losses, parameters and running statistics after `steps` Adam steps."""
    parallel.DATA_PARALLEL = split
    backend = NumpyBackend(SPEC, dtype=dtype)
    backend.init_optimizer(OptimizerConfig("adam", 0.01))
    if masks:
        fixed_masks(backend, n)
    grads = backend.loss_and_grads(*batch(n))
    losses = [float(backend.train_step(backend.prepare_batch(*batch(n, s)))) for s in range(steps)]
    return grads, losses, backend.get_params(), backend.get_buffers()


def fixed_masks(backend: NumpyBackend, n: int) -> None:
    """The harness's dropout masks for batches of n: every pass drops the same units."""
    rng = np.random.default_rng(3)
    backend.set_masks({f"{i}.mask": rng.random((n, *SPEC.input_of(i))) >= 0.25
                       for i, layer in enumerate(SPEC.layers) if layer.type == "dropout"})


@pytest.mark.parametrize("n", [2, 7, 16])
@pytest.mark.parametrize("masks", [False, True])  # dropout's masks drawn by the backend, or the harness's
def test_a_split_step_equals_one_process_in_float64(replicas, n, masks):
    split, whole = run(True, n, "float64", masks=masks), run(False, n, "float64", masks=masks)
    (loss, grads), (want_loss, want_grads) = split[0], whole[0]
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for k in want_grads:  # batch norm's sums over the batch, the loss's mean, the gradients' sum: all in another order
        np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(split[1], whole[1], rtol=1e-9)
    for got, want in ((split[2], whole[2]), (split[3], whole[3])):  # parameters, running statistics
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-7, atol=1e-9, err_msg=k)


def test_three_replicas_equal_one_process(replicas):
    parallel.configure(3, processes=True)  # two worker processes: rank 0 passes the parts of the sums on
    assert len(parallel.replicas()) == 2
    split, whole = run(True, 9, "float64", masks=True), run(False, 9, "float64", masks=True)
    for k in whole[0][1]:
        np.testing.assert_allclose(split[0][1][k], whole[0][1][k], rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(split[1], whole[1], rtol=1e-9)


def test_a_split_step_is_within_float32_rounding_of_one_process(replicas):
    (loss, grads), *_ = run(True, 16, "float32", steps=0)
    (want_loss, want_grads), *_ = run(False, 16, "float32", steps=0)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    # Against the largest gradient: a conv bias before batch norm has a true gradient of 0, its float32 one is noise.
    scale = max(np.abs(g).max() for g in want_grads.values())
    for k in want_grads:
        assert np.abs(grads[k] - want_grads[k]).max() <= 1e-6 * scale, k


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("config", [OptimizerConfig("adam", 0.01), OptimizerConfig("sgd", 0.1, momentum=0.9)])
@pytest.mark.parametrize("descend_from", [0, 10 ** 9])  # every replica updates its segment, or the first all
def test_the_replicas_update_equals_the_first_replicas_alone_bit_for_bit(replicas, workers, config, descend_from,
                                                                         monkeypatch):
    monkeypatch.setattr(split, "DESCEND_FROM", descend_from)
    parallel.configure(workers, processes=True)
    shared, alone = NumpyBackend(SPEC, dtype="float32"), NumpyBackend(SPEC, dtype="float32")
    for backend in (shared, alone):
        fixed_masks(backend, 9)
        backend.init_optimizer(config)
    start = shared.flat.copy()
    for s in range(3):
        x, y = shared.prepare_batch(*batch(9, s))
        shared.train_step((x, y))  # each replica sums and updates its segment of the parameters
        alone._gradients(x, y, update=True)  # the same split gradients, summed and applied here
        alone.optimizer.step([alone.flat_grad])
    for mine in replica.bounds(start.size, workers):  # every replica's segment moved
        assert not np.array_equal(shared.flat[mine], start[mine])
    got, want = shared.get_params(), alone.get_params()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_array_equal(shared.flat_grad, alone.flat_grad)  # the whole sum, every segment's
    assert all(parallel.placed(a) for a in shared.optimizer.state()) == (descend_from == 0)


@pytest.mark.parametrize("ordered", [True, False])  # the small sums through the mailboxes, or the sockets
def test_the_exchanges_through_either_channel_equal_one_process(replicas, ordered, monkeypatch):
    monkeypatch.setattr(mailbox, "ORDERED", ordered)
    puts = []
    real_put = mailbox.Box.put
    monkeypatch.setattr(mailbox.Box, "put", lambda box, a: (puts.append(a.shape), real_put(box, a)))
    split, whole = run(True, 7, "float64", masks=True), run(False, 7, "float64", masks=True)
    for k in whole[0][1]:
        np.testing.assert_allclose(split[0][1][k], whole[0][1][k], rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(split[1], whole[1], rtol=1e-9)
    assert bool(puts) == ordered  # batch norm's sums, this process's side of them


def test_a_mailbox_passes_its_messages_in_order_through_its_buffers():
    box = mailbox.Box(np.empty)
    assert not box.ready()
    messages = [np.full((2, 3), float(k)) for k in range(mailbox.BUFFERS + 2)]
    for k, message in enumerate(messages):
        if k >= mailbox.BUFFERS - 1:  # at most BUFFERS - 1 untaken, as the replicas leave them
            np.testing.assert_array_equal(box.take((2, 3)), messages[k - mailbox.BUFFERS + 1])
        box.put(message)
        assert box.ready()
    for message in messages[-(mailbox.BUFFERS - 1):]:
        np.testing.assert_array_equal(box.take((2, 3)), message)
    assert not box.ready()
    box.put(np.zeros(1))
    box.clear()
    assert not box.ready()


def test_one_image_is_not_split(replicas):
    backend = NumpyBackend(models.get("mlp"))
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28))
    backend.loss_and_grads(x, np.array([3]))
    assert backend.replicas.key is None  # nothing was placed in shared memory for a split
    backend.loss_and_grads(np.concatenate([x, x]), np.array([3, 3]))
    assert backend.replicas.key is not None


def test_a_step_is_split_from_its_convs_work(replicas, monkeypatch):
    monkeypatch.setattr(split, "SPLIT_FLOPS", 16_000_000)
    cnn, mlp = NumpyBackend(models.get("cnn")), NumpyBackend(models.get("mlp"))
    per_image = 52_609_024 // 64  # cnn's convs, forward and backward (models/flops.py)
    assert cnn.replicas.worth(cnn.spec, 64) and not cnn.replicas.worth(cnn.spec, 16_000_000 // per_image)
    assert not mlp.replicas.worth(mlp.spec, 64)  # no convs: its dense GEMMs share their own work
    uncounted = NumpyBackend(models.get("cnn"))

    def no_rule(spec, batch):
        raise ValueError("no FLOP rule for layer type 'new'")
    monkeypatch.setattr(split.flops, "layer_flops", no_rule)
    assert not uncounted.replicas.worth(uncounted.spec, 64)  # unsplit, not an error


# A label out of range fails the loss of the share that holds it, after batch norm's forward exchanges: the worker's
# (an error from it), or this process's (the worker, waiting in batch norm's backward exchange, is stopped).
@pytest.mark.parametrize("where, error", [(-1, RuntimeError), (0, IndexError)])
def test_a_failed_share_is_an_error_and_the_next_step_runs(replicas, where, error):
    backend = NumpyBackend(SPEC, dtype="float64")
    fixed_masks(backend, 8)
    x, y = batch(8)
    bad = y.copy()
    bad[where] = 99
    with pytest.raises(error, match="worker process" if error is RuntimeError else None):
        backend.loss_and_grads(x, bad)
    parallel.DATA_PARALLEL = False
    want = backend.loss_and_grads(x, y)
    parallel.DATA_PARALLEL = True
    got = backend.loss_and_grads(x, y)
    assert got[0] == pytest.approx(want[0], rel=1e-12)


def test_the_worker_rebuilds_its_replica_for_another_backend(replicas):
    first, second = NumpyBackend(SPEC, dtype="float64", seed=1), NumpyBackend(SPEC, dtype="float64", seed=2)
    for backend in (first, second):
        fixed_masks(backend, 6)
    x, y = batch(6)
    parallel.DATA_PARALLEL = False
    want = [b.loss_and_grads(x, y)[0] for b in (first, second)]
    parallel.DATA_PARALLEL = True
    got = [b.loss_and_grads(x, y)[0] for b in (first, second, first)]  # each one's replica replaces the other's
    assert got == pytest.approx([*want, want[0]], rel=1e-12)


def test_a_replica_that_hears_nothing_gives_up_rather_than_hang(monkeypatch):
    import time
    from multiprocessing.connection import Pipe

    from fwbench.backends.engine import remote, shared
    monkeypatch.setattr(replica, "STALL_SECONDS", 0.2)
    parts = replica.bounds(4, 2)
    ours, _theirs = Pipe()
    with pytest.raises(replica.Aborted, match="sent nothing for 0.2 s"):
        replica.Link(1, parts, connection=ours).sum(np.zeros(3))
    arena = shared.Arena()
    worker = remote.Worker(arena)
    try:
        worker.submit(time.sleep, 30)  # a worker that never reaches the exchange
        link = replica.Link(0, parts, workers=[worker])
        with pytest.raises(RuntimeError, match="worker process sent nothing for 0.2 s"):
            link.sum(np.zeros(3))
        link.abort()  # kills it rather than wait for it
        assert worker.process.wait(timeout=10) is not None
    finally:
        worker.close()


def test_bounds_are_even_and_in_order():
    assert replica.bounds(7, 2) == [slice(0, 4), slice(4, 7)]
    assert replica.bounds(64, 3) == [slice(0, 22), slice(22, 43), slice(43, 64)]

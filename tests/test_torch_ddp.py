"""torch@ddp: contiguous slices, the global batch's gradient on 2 and 3 gloo workers, and no worker left behind.

Every run with workers is a fresh process with a hard timeout: a worker that skips a collective hangs the others."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import workers_procs

pytest.importorskip("torch")

from fwbench.backends.torch_ddp import bounds  # noqa: E402

TIMEOUT = 240
FOLLOWER = "fwbench.backends.torch_ddp"


def followers() -> list[int]:
    return workers_procs.running(FOLLOWER)


def gone(pids) -> bool:
    return workers_procs.gone(pids, FOLLOWER)


def fwbench(*args: str, workers: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwbench", *args, "--workers", str(workers)], capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_slices_are_contiguous_cover_the_batch_and_differ_by_one_row_at_most():
    for size in (0, 1, 2, 5, 64, 67):
        for workers in (1, 2, 3, 4):
            rows = [bounds(size, workers, r) for r in range(workers)]
            assert rows[0][0] == 0 and rows[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            lengths = [hi - lo for lo, hi in rows]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    assert [bounds(5, 3, r) for r in range(3)] == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("workers, batch", [(2, 8), (3, 5)])
def test_the_all_reduced_gradient_and_trajectory_are_the_global_batch_s(workers, batch):
    # flaxex has dropout: each worker applies its rows of the harness's masks. 3 workers and a batch of 5 give
    # slices of 2, 2 and 1, so an unweighted mean of the workers' means would be off.
    out = fwbench("agree", "--model", "flaxex", "--backends", "numpy,torch@ddp", "--dtype", "float64",
                  "--batch-size", str(batch), "--steps", "3", "--data", "random", "--json", workers=workers)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["passed"] and doc["tolerance"]["grad_rel_l2"] == 1e-10
    assert doc["trajectory"]["replicas_identical"] == {"torch@ddp": True}
    assert gone(followers())


def test_the_kit_passes_and_batch_norm_is_declared_unsupported():
    out = fwbench("conformance", "torch@ddp", "--json")
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["passed"], [c for c in doc["checks"] if c["status"] == "fail"]
    refused = {c["name"] for c in doc["checks"] if c["status"] == "not supported"}
    assert refused and all("batchnorm" in name for name in refused)


def test_workers_leave_with_their_harness_even_when_it_is_killed():
    code = textwrap.dedent("""
        import sys, time
        from fwbench import backends, models
        spec = models.get("mlp")
        b = backends.build("torch@ddp", spec, None, device="cpu", dtype="float32")
        try:  # a refusal on every rank leaves the group usable: the next command still runs everywhere
            backends.build("torch@ddp", spec, None, device="cpu", dtype="float16")
        except backends.BackendError as e:
            print("refused", e, flush=True)
        print("loss", b.loss_and_grads(__import__("numpy").zeros((4, 1, 28, 28)), [0, 1, 2, 3])[0], flush=True)
        print("pids", *[c.pid for c in b.group.children], flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FWBENCH_WORKERS="2"))
    try:
        lines = workers_procs.lines_until(proc, "pids", TIMEOUT)
        assert any(line.startswith("refused") and "dtype" in line for line in lines), lines
        pids = [int(p) for p in lines[-1].split()[1:]]
        assert len(pids) == 1 and set(pids) <= set(followers())
        proc.send_signal(signal.SIGKILL)  # no atexit, no goodbye: the followers must notice on their own
        proc.wait(30)
        assert gone(pids), "a worker outlived its killed harness"
    finally:
        proc.kill()


def test_under_torchrun_rank_0_runs_the_harness_and_the_others_serve_it():
    from fwbench.backends.workers import free_port
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(free_port()), "-m", "fwbench", "agree", "--backends",
                          "numpy,torch@ddp", "--dtype", "float64", "--steps", "2", "--data", "random", "--json"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, "only rank 0 reports"  # the follower left before the harness code after its build
    doc = json.loads(lines[0])
    assert doc["passed"] and doc["trajectory"]["replicas_identical"] == {"torch@ddp": True}

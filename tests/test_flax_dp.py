"""flax@dp: worker processes joined by jax.distributed (gloo), the batch split over their devices, none left behind.

Every run with workers is a fresh process with a hard timeout: a worker that skips a collective hangs the others."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import workers_procs

pytest.importorskip("flax")

TIMEOUT = 300
WORKER = "fwbench.backends.flax_dp"


def workers_running() -> list[int]:
    return workers_procs.running(WORKER)


def gone(pids) -> bool:
    return workers_procs.gone(pids, WORKER)


def fwbench(*args: str, workers: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-m", "fwbench", *args, "--workers", str(workers), "--json"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])  # the workers' own output (gloo's) stays out of it


@pytest.mark.parametrize("model, batch, workers", [("tgmnist", 5, 2), ("flaxex", 6, 3)])
def test_gradients_trajectory_and_batch_norm_are_the_global_batch_s(model, batch, workers):
    # tgmnist has batch norm, whose statistics must be the global batch's; 5 rows do not split over 2 workers
    # and run replicated, 6 split over 3. flaxex has dropout, drawn from the seeded key inside the sharded program.
    doc = fwbench("agree", "--model", model, "--backends", "numpy,flax,flax@dp", "--dtype", "float64",
                  "--batch-size", str(batch), "--steps", "2", "--data", "random", workers=workers)
    assert doc["passed"], doc["breaches"]
    assert doc["trajectory"]["replicas_identical"] == {"flax@dp": True}
    assert gone(workers_running())


def test_the_kit_passes():
    doc = fwbench("conformance", "flax@dp")
    assert doc["passed"], [c for c in doc["checks"] if c["status"] == "fail"]
    assert any(c["name"].startswith("data-parallel/") for c in doc["checks"])


def test_one_process_of_virtual_devices_splits_the_batch_and_xla_all_reduces():
    # What each worker runs, on 2 devices of one process: the mesh, the split and XLA's all-reduce.
    code = textwrap.dedent("""
        import os
        os.environ["FWBENCH_WORKERS"] = "2"
        import jax, numpy as np
        jax.config.update("jax_num_cpu_devices", 2)
        from fwbench import models
        from fwbench.backends.flax_mesh import FlaxMesh
        from fwbench.models.params import init_params
        spec = models.get("mlp")
        b = FlaxMesh(spec, init_params(spec, 0, "float32"), device="cpu", dtype="float32", mode="dp")
        x, y = b.prepare_batch(np.zeros((8, 1, 28, 28), np.float32), np.zeros(8, np.int64))
        assert [s.data.shape[0] for s in x.addressable_shards] == [4, 4]
        odd, _ = b.prepare_batch(np.zeros((5, 1, 28, 28), np.float32), np.zeros(5, np.int64))
        assert [s.data.shape[0] for s in odd.addressable_shards] == [5, 5]  # replicated: 5 rows do not split
        hlo = b._grad.lower(b.params, b.batch_stats, x, y, b._noise(8)).compile().as_text()
        assert "all-reduce" in hlo
        assert b.forward(np.zeros((8, 1, 28, 28), np.float32)).shape == (8, 10) and b.digest() is not None
        os.environ["FWBENCH_WORKERS"] = "3"
        try:
            FlaxMesh(spec, None, device="cpu", dtype="float32", mode="dp")
            raise SystemExit("3 workers on 2 devices were accepted")
        except Exception as e:
            assert "have 2 cpu device(s)" in str(e), e
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_workers_have_cores_of_their_own_a_dead_one_is_named_and_none_outlives_a_killed_harness():
    code = textwrap.dedent("""
        import os, signal, time
        import numpy as np
        from fwbench import backends, models
        spec = models.get("mlp")
        b = backends.build("flax@dp", spec, None, device="cpu", dtype="float32")
        try:  # a refusal on every worker leaves them usable: the next command still runs everywhere
            backends.build("flax@dp", spec, None, device="cpu", dtype="float16")
        except backends.BackendError as e:
            print("refused", e, flush=True)
        print("loss", b.loss_and_grads(np.zeros((4, 1, 28, 28)), np.arange(4))[0], flush=True)
        print("cpus", *[sorted(os.sched_getaffinity(c.pid)) for c in b.group.children], flush=True)
        print("pids", *[c.pid for c in b.group.children], flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FWBENCH_WORKERS="2", FWBENCH_WORKER_THREADS="1"))
    try:
        lines = workers_procs.lines_until(proc, "pids", TIMEOUT)
        assert any(line.startswith("refused") and "dtype" in line for line in lines), lines
        assert any(line.startswith("loss 2.3") for line in lines), lines
        if len(os.sched_getaffinity(0)) >= 2:
            assert next(line for line in lines if line.startswith("cpus")) == "cpus [0] [1]"
        pids = [int(p) for p in lines[-1].split()[1:]]
        assert len(pids) == 2 and set(pids) <= set(workers_running())
        proc.send_signal(signal.SIGKILL)  # no atexit, no goodbye: the workers must notice on their own
        proc.wait(30)
        assert gone(pids), "a worker outlived its killed harness"
    finally:
        proc.kill()


def test_a_worker_that_dies_is_named_and_the_rest_are_stopped():
    code = textwrap.dedent("""
        import os, signal
        import numpy as np
        from fwbench import backends, models
        spec = models.get("mlp")
        b = backends.build("flax@dp", spec, None, device="cpu", dtype="float32")
        pids = [c.pid for c in b.group.children]
        os.kill(pids[1], signal.SIGKILL)
        for attempt in range(2):
            try:
                b.get_params()
                raise SystemExit("a dead worker went unnoticed")
            except backends.BackendError as e:
                print(e, flush=True)
        print("pids", *pids)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                         env=dict(os.environ, FWBENCH_WORKERS="2"))
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, (out.stdout, out.stderr[-2000:])
    assert lines[0].startswith("flax@dp: worker 1 exited with code -9"), lines[0]
    assert lines[1].endswith("start a new process to run flax@dp again"), lines[1]
    assert gone([int(p) for p in lines[2].split()[1:]])


def test_a_worker_that_stops_answering_fails_the_call_once_the_others_have_answered():
    code = textwrap.dedent("""
        import os, signal, time
        from fwbench import backends, models
        spec = models.get("mlp")
        b = backends.build("flax@dp", spec, None, device="cpu", dtype="float32")
        os.environ["FWBENCH_DP_TIMEOUT_S"] = "2"  # read at each call: the build had the default
        pids = [c.pid for c in b.group.children]
        os.kill(pids[1], signal.SIGSTOP)  # alive, silent: as if it waited in a collective the others skipped
        began = time.monotonic()
        try:
            b.get_params()
            raise SystemExit("a silent worker went unnoticed")
        except backends.BackendError as e:
            print(e, flush=True)
        print("waited", round(time.monotonic() - began))
        print("pids", *pids)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                         env=dict(os.environ, FWBENCH_WORKERS="2"))
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, (out.stdout, out.stderr[-2000:])
    assert lines[0] == ("flax@dp: the workers took more than 2 s to answer 'get_params' after worker 0 did "
                        "(set FWBENCH_DP_TIMEOUT_S for longer)"), lines[0]
    assert 2 <= int(lines[1].split()[1]) <= 20
    assert gone([int(p) for p in lines[2].split()[1:]])  # the stopped one killed, not left behind

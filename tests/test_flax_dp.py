"""flax@dp: a mesh of virtual CPU devices, the batch split over it; each run in a fresh process, JAX's device count
being fixed when it starts."""
import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("flax")

TIMEOUT = 300


def fwbench(*args: str, workers: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-m", "fwbench", *args, "--workers", str(workers), "--json"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("model, batch", [("flaxex", 6), ("tgmnist", 5)])
def test_gradients_trajectory_and_batch_norm_are_the_global_batch_s(model, batch):
    # tgmnist has batch norm, whose statistics must be the global batch's; 5 rows do not split over 2 devices
    # and run replicated, 6 do.
    doc = fwbench("agree", "--model", model, "--backends", "numpy,flax@dp", "--dtype", "float64",
                  "--batch-size", str(batch), "--steps", "2", "--data", "random")
    assert doc["passed"], doc["breaches"]
    assert doc["trajectory"]["replicas_identical"] == {"flax@dp": True}


def test_the_kit_passes_on_three_devices():
    doc = fwbench("conformance", "flax@dp", workers=3)
    assert doc["passed"], [c for c in doc["checks"] if c["status"] == "fail"]


def test_the_batch_is_split_and_xla_all_reduces_and_too_few_devices_are_refused():
    code = textwrap.dedent("""
        import os
        os.environ["FWBENCH_WORKERS"] = "2"
        import jax, numpy as np
        from fwbench import backends, models
        from fwbench.models.params import init_params
        spec = models.get("mlp")
        b = backends.build("flax@dp", spec, init_params(spec, 0, "float32"), device="cpu", dtype="float32")
        x, y = b.prepare_batch(np.zeros((8, 1, 28, 28), np.float32), np.zeros(8, np.int64))
        assert [s.data.shape[0] for s in x.addressable_shards] == [4, 4]
        hlo = b._grad.lower(b.params, b.batch_stats, x, y, b._noise(8)).compile().as_text()
        assert "all-reduce" in hlo
        assert b.scaling_note.startswith("not a scaling measurement: 2 virtual CPU devices")
        os.environ["FWBENCH_WORKERS"] = "3"  # JAX started with 2: a third cannot be added now
        try:
            backends.build("flax@dp", spec, None, device="cpu", dtype="float32")
            raise SystemExit("3 workers on 2 devices were accepted")
        except backends.BackendError as e:
            assert "has 2 cpu device(s)" in str(e) and "process of its own" in str(e), e
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]

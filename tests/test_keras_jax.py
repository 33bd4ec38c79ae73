"""keras@jax: Keras on its JAX backend, a process of its own; every check of it runs in a fresh one."""
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from fwbench import backends
from fwbench.backends.base import BackendError
from fwbench.harness.agreement.command import backend_names

NEEDS = [m for m in ("keras", "jax", "optax") if importlib.util.find_spec(m) is None]
needs_keras_jax = pytest.mark.skipif(bool(NEEDS), reason=f"keras@jax needs {', '.join(NEEDS)}")


def fresh(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter: pytest's own may already hold Keras on TensorFlow."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_frameworks_set_up_per_process_are_grouped_apart():
    names = ["numpy", "keras", "torch", "keras@jax", "flax", "keras@xla"]
    assert backends.processes(names) == [["numpy", "keras", "torch", "flax", "keras@xla"], ["keras@jax"]]
    # The first tag seen leads; names without a tag go with it.
    assert backends.processes(["keras@jax", "numpy", "keras@loop"]) == [["keras@jax", "numpy"], ["keras@loop"]]
    assert backends.processes(["numpy", "torch"]) == [["numpy", "torch"]]
    assert backends.processes(["numpy", "my.module:Backend@a"]) == [["numpy", "my.module:Backend@a"]]


def test_the_mode_another_class_implements_is_listed_and_needs_its_own_modules():
    class Stub:
        modes = ("graph", "xla")
    assert backends.modes("keras", Stub) == ["graph", "xla", "jax"]
    assert backends.modes("numpy", Stub) == ["graph", "xla"]
    entry = dict(backends.BUILTIN["keras"].modes)["jax"]
    assert entry.requires == ("keras", "jax", "optax") and "tensorflow" not in entry.requires


def test_agree_names_the_two_runs_when_keras_would_need_two_backends():
    with pytest.raises(BackendError) as e:
        backend_names("numpy,keras,keras@jax")
    assert "keras@jax cannot run in one process with numpy, keras" in str(e.value)
    assert "--backends numpy,keras and --backends numpy,keras@jax" in str(e.value)


@needs_keras_jax
def test_keras_at_jax_passes_the_kit_in_float32():
    out = subprocess.run([sys.executable, "-m", "fwbench", "conformance", "keras@jax", "--json"],
                         capture_output=True, text=True, timeout=300)
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["passed"], [c for c in doc["checks"] if c["status"] != "pass"]
    assert doc["dtype"] == "float32" and "float64 was refused" in doc["dtype_note"]


@needs_keras_jax
def test_keras_at_jax_trains_as_numpy_does_and_refuses_what_it_cannot():
    out = fresh("""
        import numpy as np
        from fwbench import backends, models
        from fwbench.backends.base import BackendError, OptimizerConfig
        from fwbench.models.params import dropout_masks, init_params
        spec = models.get("flaxex")  # conv, pool, dropout, dense: masks from the harness
        params = init_params(spec, 0, "float32")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, *spec.input)).astype(np.float32)
        y = rng.integers(0, spec.classes, 4)
        runs = {}
        for name in ("numpy", "keras@jax"):
            b = backends.build(name, spec, params, device="cpu", dtype="float32")
            b.set_masks(dropout_masks(spec, 0, 0, 4))
            b.init_optimizer(OptimizerConfig("sgd", lr=0.05, momentum=0.9))
            losses = []
            for lr in (0.05, 0.02, 0.01):
                b.set_lr(lr)
                losses.append(float(b.train_step(b.prepare_batch(x, y))))
            runs[name] = losses, b.get_params()
        (la, pa), (lb, pb) = runs["numpy"], runs["keras@jax"]
        assert np.allclose(la, lb, rtol=1e-5), (la, lb)
        worst = max(np.linalg.norm(pa[k] - pb[k]) / np.linalg.norm(pa[k]) for k in pa)
        assert worst < 1e-5, worst
        try:
            backends.build("keras@jax", spec, params, device="cpu", dtype="float64")
            raise SystemExit("float64 was accepted")
        except BackendError as e:
            assert "float32 only" in str(e), e
        try:
            backends.load("keras@graph")
            raise SystemExit("keras on tensorflow loaded beside keras on jax")
        except BackendError as e:
            assert "already runs Keras on jax" in str(e), e
        print("ok", worst)
    """)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]

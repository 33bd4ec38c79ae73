"""flax@eigen: stock flax in a process whose XLA runs convolutions on Eigen, and only such a process."""
import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("flax")

from fwbench import backends  # noqa: E402

TIMEOUT = 300

COMPILED = textwrap.dedent("""
    import json, os, re, sys
    import numpy as np
    from fwbench import backends, models
    from fwbench.backends.base import OptimizerConfig
    from fwbench.models.params import init_params
    spec = models.get("pyex")
    b = backends.build(sys.argv[1], spec, init_params(spec, 0, "float32"), device="cpu", dtype="float32")
    b.init_optimizer(OptimizerConfig("adam", lr=1e-3))
    x, y = b.prepare_batch(np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64))
    hlo = b._step.lower(b.params, b.opt_state, b.batch_stats, x, y, b._lr, b._noise(4)).compile().as_text()
    entry = hlo[hlo.index("\\nENTRY"):]  # a convolution in the entry runs on Eigen; YNNPACK's sit in fusions
    print(json.dumps({"eigen": len(re.findall(r" convolution\\(", entry)), "env": os.environ.get("XLA_FLAGS")}))
""")


def compiled(name: str) -> dict:
    out = subprocess.run([sys.executable, "-c", COMPILED, name], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_the_flag_reaches_xla_and_leaves_the_environment_as_it_was():
    stock, eigen = compiled("flax"), compiled("flax@eigen")
    # pyex has two convs: forward, weight and input gradients. Stock jaxlib 0.10.2 leaves one to Eigen.
    assert eigen["eigen"] > stock["eigen"] >= 0, (stock, eigen)
    assert eigen["env"] is None  # a bench cell started from here must not inherit the flag


def test_it_is_refused_where_jax_already_runs_and_kept_apart_from_every_other_jax_name():
    code = textwrap.dedent("""
        from fwbench import backends, models
        spec = models.get("mlp")
        backends.build("flax", spec, None, device="cpu", dtype="float32")
        try:
            backends.build("flax@eigen", spec, None, device="cpu", dtype="float32")
        except backends.BackendError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.startswith("flax@eigen sets an XLA flag that XLA reads only when JAX starts"), out
    assert backends.processes(["numpy", "torch", "flax@eigen"]) == [["numpy", "torch", "flax@eigen"]]
    assert backends.processes(["numpy", "flax", "flax@eigen"]) == [["numpy", "flax"], ["flax@eigen"]]
    assert backends.processes(["flax@eigen", "keras@jax"]) == [["keras@jax"], ["flax@eigen"]]


def test_the_kit_passes():
    out = subprocess.run([sys.executable, "-m", "fwbench", "conformance", "flax@eigen", "--json"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["passed"], [c for c in doc["checks"] if c["status"] == "fail"]

"""benchmarks/gpu_diagnose.py: per-step update errors against the float64 reference, and a refusal as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("gpu_diagnose", None)
    import gpu_diagnose
    return gpu_diagnose


def test_the_reference_against_itself_reads_zero_at_every_step(script):
    found = script.one("numpy", "cpu", "sgd", 3, 1)
    assert found["worst_per_step"] == [0.0, 0.0, 0.0]
    assert set(found["per_step"][0]) == {"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"}


def test_an_update_off_by_a_factor_shows_at_its_step(script, monkeypatch):
    from fwbench.backends import numpy_backend
    real = numpy_backend.NumpyBackend.train_step
    steps = {}  # per model; the first model stepped is the one measured, the reference comes after it

    def doubled_after_one(self, batch):  # the measured model's second step moves twice as far
        steps[id(self)] = steps.get(id(self), 0) + 1
        before = {k: v.copy() for k, v in self.get_params().items()}
        loss = real(self, batch)
        if len(steps) == 1 and steps[id(self)] == 2:
            self.set_params({k: 2 * v - before[k] for k, v in self.get_params().items()})
        return loss
    monkeypatch.setattr(numpy_backend.NumpyBackend, "train_step", doubled_after_one)
    worst = script.one("numpy", "cpu", "sgd", 3, 0)["worst_per_step"]
    assert worst[0] == 0.0 and worst[1] == pytest.approx(1.0) and worst[2] > 0


def test_a_backend_that_refuses_is_one_line_of_json():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_diagnose.py"), "--device", "cpu",
                           "--names", "nosuch", "--optimizers", "sgd", "--before", "0"],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 1
    assert json.loads(lines[0])["error"] and json.loads(lines[0])["name"] == "nosuch"

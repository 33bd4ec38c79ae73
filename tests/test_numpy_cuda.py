"""The `numpy` backend on cuda: CuPy's refusals, the devices() probe, and the engine run on a stand-in device module."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from fwbench.backends.base import BackendError, OptimizerConfig
from fwbench.backends.engine import conv
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.models.params import init_params
from tests.specs import SPECS, batch, relerr


class DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: like CuPy, it refuses to mix with host arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o, ufunc.__name__) for o in out)
        result = getattr(ufunc, method)(*(_unwrap(a, ufunc.__name__) for a in inputs), **kwargs)
        return (out[0] if len(out) == 1 else out) if out is not None else _wrap(result)

    def __getitem__(self, key):
        return _wrap(super().__getitem__(key))  # CuPy's a[()] and a[i, j] are 0-d arrays, not scalars


# module_of recognises CuPy arrays by the package that defines their type.
DeviceArray.__module__ = "cupy"


def _unwrap(a, where: str):
    if type(a) is np.ndarray:
        raise TypeError(f"host array mixed into device op {where}")
    return a.view(np.ndarray) if isinstance(a, DeviceArray) else a


def _wrap(r):
    """Results as device arrays; reductions to a scalar give 0-d arrays, as in CuPy."""
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, np.generic):
        r = np.asarray(r)
    return r.view(DeviceArray) if type(r) is np.ndarray else r


class FakeCupy(types.ModuleType):
    """numpy's functions, taking and returning DeviceArrays only (asarray and asnumpy transfer), and counting calls."""

    ndarray = DeviceArray

    def __init__(self, gpus=lambda: 1):
        super().__init__("cupy")
        self.calls: dict[str, int] = {}
        self.synced = 0
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=gpus),
                                          Device=lambda: types.SimpleNamespace(synchronize=self._sync))
        self.get_default_memory_pool = lambda: types.SimpleNamespace(total_bytes=lambda: 12345)
        self.asnumpy = lambda a: np.array(a)  # a host copy

    def _sync(self):
        self.synced += 1

    def __getattr__(self, name):
        fn = getattr(np, name)
        if not callable(fn) or isinstance(fn, type):  # dtypes and constants are shared with numpy
            return fn

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name != "asarray":
                for a in (*args, *kwargs.values()):
                    if type(a) is np.ndarray:
                        raise TypeError(f"host array passed to cupy.{name}")
            return _wrap(fn(*args, **kwargs))
        return call


@pytest.fixture
def fake(monkeypatch):
    cupy = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return cupy


def test_cuda_without_cupy_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now raises ModuleNotFoundError
    with pytest.raises(BackendError, match=r"^backend 'numpy' cannot use device 'cuda': it needs CuPy, "
                       r"which is not installed; pip install cupy-cuda12x \(match your CUDA version\)$") as e:
        NumpyBackend(SPECS["tinycnn"], device="cuda")
    assert "\n" not in str(e.value)
    assert NumpyBackend.devices() == ["cpu"]


def no_device():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


@pytest.mark.parametrize("gpus", [lambda: 0, no_device])
def test_cuda_with_cupy_but_no_gpu(monkeypatch, gpus):
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(gpus))
    with pytest.raises(BackendError, match=r"CuPy sees no GPU \((0 devices|cudaErrorNoDevice)") as e:
        NumpyBackend(SPECS["tinycnn"], device="cuda")
    assert "\n" not in str(e.value)
    assert NumpyBackend.devices() == ["cpu"]


def test_broken_cupy_install_is_one_line(monkeypatch):
    class Broken:
        """A finder for which importing cupy fails the way a CUDA mismatch does: a page-long ImportError."""

        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise ImportError("CuPy is not correctly installed.\n\nIf you are using wheel distribution ...")
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(BackendError, match=r"CuPy failed to import \(CuPy is not correctly installed.\)$"):
        NumpyBackend(SPECS["tinycnn"], device="cuda")
    assert NumpyBackend.devices() == ["cpu"]


def test_devices_lists_cuda_only_when_the_probe_succeeds(fake):
    assert NumpyBackend.devices() == ["cpu", "cuda"]
    fake.cuda.runtime.getDeviceCount = lambda: 0
    assert NumpyBackend.devices() == ["cpu"]


def test_cpu_backend_imports_no_cupy():
    code = ("import sys, numpy as np, models, backends.numpy_backend as nb\n"
            "from fwbench.backends.base import OptimizerConfig\n"
            "be = nb.NumpyBackend(models.get('tinycnn'))\n"
            "be.init_optimizer(OptimizerConfig())\n"
            "be.train_step(be.prepare_batch(np.zeros((2, 1, 28, 28)), np.zeros(2)))\n"
            "print('cupy' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def run(device: str, spec, optimizer: OptimizerConfig, steps: int = 3):
    """A float64 backend from the canonical weights: loss and gradients, then `steps` updates; all on the host."""
    be = NumpyBackend(spec, init_params(spec, 0, "float64"), device=device, dtype="float64")
    x, y = batch(spec, n=5)
    loss, grads = be.loss_and_grads(x, y)
    be.init_optimizer(optimizer)
    losses = [float(be.train_step(be.prepare_batch(x, y))) for _ in range(steps)]
    return be, loss, grads, losses, be.forward(x)


@pytest.mark.parametrize("optimizer", [OptimizerConfig("adam", lr=1e-2), OptimizerConfig("sgd", lr=1e-2, momentum=0.9)])
@pytest.mark.parametrize("model", ["cnn", "tinycnn", "mlp", "wide"])
def test_engine_runs_on_the_device_module_and_matches_numpy_exactly(fake, model, optimizer):
    spec = SPECS[model]
    be, loss, grads, losses, logits = run("cuda", spec, optimizer)
    # Everything the engine keeps stayed on the device: no op fell back to creating host arrays.
    opt = be.optimizer
    state = [*getattr(opt, "m", []), *getattr(opt, "v", []), *getattr(opt, "tmp", []), *getattr(opt, "denom", []),
             *(opt.velocity or [] if hasattr(opt, "velocity") else [])]
    kept = [be.flat, be.flat_grad, *be.grad_views, *state,
            *(t.data for t in be.params.values()), *(t.grad for t in be.params.values())]
    assert state and all(type(a) is DeviceArray for a in kept), {type(a) for a in kept}
    assert type(be.train_step(be.prepare_batch(*batch(spec, n=5)))) is DeviceArray  # the loss, left on the device
    # The host edge hands back plain NumPy.
    assert all(type(g) is np.ndarray for g in (*grads.values(), *be.get_params().values(), logits))
    assert fake.calls.get("matmul", 0) + fake.calls.get("empty", 0) > 0 and fake.calls["asarray"] > 0
    # The same numbers as plain NumPy, bit for bit (on the CPU, conv2d_maxpool also slices the batch).
    _, loss0, grads0, losses0, logits0 = run("cpu", spec, optimizer)
    assert loss == loss0 and losses == losses0
    assert all(np.array_equal(grads[k], grads0[k]) for k in grads0)
    assert np.array_equal(logits, logits0)


def test_the_device_module_catches_an_op_that_creates_host_arrays(fake, monkeypatch):
    """The stand-in is strict enough: conv ops that create their arrays with numpy fail loudly."""
    monkeypatch.setattr(conv, "module_of", lambda *arrays: np)
    be = NumpyBackend(SPECS["cnn"], device="cuda")
    with pytest.raises(TypeError, match="host array"):
        be.loss_and_grads(*batch(SPECS["cnn"], n=2))


def test_params_round_trip_sync_and_memory(fake):
    spec = SPECS["tinycnn"]
    params = init_params(spec, 3)
    be = NumpyBackend(spec, device="cuda")
    be.set_params(params)
    out = be.get_params()
    assert all(type(v) is np.ndarray and np.array_equal(v, params[k]) for k, v in out.items())
    assert type(next(iter(be.params.values())).data) is DeviceArray
    be.synchronize()
    assert fake.synced == 1 and be.peak_device_memory() == 12345
    assert NumpyBackend(spec).peak_device_memory() is None


def test_real_cupy_gradients_match_the_cpu():
    """For a GPU machine: the same engine on CuPy gives the CPU's float64 gradients to 1e-10."""
    pytest.importorskip("cupy")
    if "cuda" not in NumpyBackend.devices():
        pytest.skip("CuPy sees no GPU")
    spec = SPECS["cnn"]
    adam = OptimizerConfig("adam", lr=1e-3)
    be, loss, grads, losses, logits = run("cuda", spec, adam)
    _, loss0, grads0, losses0, logits0 = run("cpu", spec, adam)
    assert abs(loss - loss0) <= 1e-10 * abs(loss0)
    assert max(relerr(grads[k], grads0[k]) for k in grads0) < 1e-10
    assert relerr(np.array(losses), np.array(losses0)) < 1e-10 and relerr(logits, logits0) < 1e-9
    assert type(be.train_step(be.prepare_batch(*batch(spec, n=5)))).__module__.startswith("cupy")
    be.synchronize()
    assert be.peak_device_memory() > 0

"""Backend discovery: built-ins, entry-point plugins (working, broken, missing a dependency) and module paths."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fwbench import backends
from fwbench.backends.base import check_mode
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {
    # name: (module source, entry-point target)
    "good": ("from fwbench.backends.numpy_backend import NumpyBackend\n\n"
             "class Good(NumpyBackend):\n    name = 'good'\n", "fake_good:Good"),
    "broken": ("raise RuntimeError('plugin bug at import')\n", "fake_broken:Thing"),
    "needy": ("import some_framework_nobody_has\n", "fake_needy:Thing"),
    "numpy": ("X = 1\n", "fake_shadow:X"),  # tries to take a built-in name
}


class Moded(NumpyBackend):
    """A stand-in with modes that records the mode of every instance built: "test_registry:Moded@fancy"."""
    name = "moded"
    modes = ("plain", "fancy")
    built: list = []

    def __init__(self, *args, mode=None, **kwargs):
        Moded.built.append(mode)
        self.mode = check_mode(type(self), mode)
        super().__init__(*args, **kwargs)


@pytest.fixture
def moded():
    """Moded's name in its fancy mode, with an empty record of builds."""
    Moded.built.clear()
    yield "test_registry:Moded@fancy"
    Moded.built.clear()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding the fake plugins and one distribution's entry points for them."""
    for _, (code, target) in PLUGINS.items():
        (tmp_path / f"{target.split(':')[0]}.py").write_text(code)
    dist = tmp_path / "fake_plugins-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.2.3\n")
    lines = "".join(f"{name} = {target}\n" for name, (_, target) in PLUGINS.items())
    (dist / "entry_points.txt").write_text(f"[{backends.GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends.plugins.cache_clear()
    yield tmp_path
    backends.plugins.cache_clear()


def test_plugins_are_discovered_with_their_distribution(site):
    assert backends.names()[:5] == ["numpy", "torch", "flax", "keras", "micrograd"]
    assert {"good", "broken", "needy"} <= set(backends.names())
    assert backends.source("good") == "plugin fake-plugins 1.2.3"
    assert backends.source("numpy") == "built-in"  # the plugin could not take the name
    assert backends.load("good").name == "good"


def test_listing_survives_broken_plugins(site, capsys):
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["good"]["status"] == "ok" and rows["good"]["source"] == "plugin fake-plugins 1.2.3"
    assert rows["broken"]["status"] == "broken: backend 'broken' is broken: RuntimeError: plugin bug at import"
    assert rows["needy"]["status"].startswith("missing dependency: ")
    assert "some_framework_nobody_has" in rows["needy"]["status"] and "pip install fake-plugins" in rows["needy"]["status"]
    assert rows["numpy"]["status"] == "ok" and rows["numpy"]["source"] == "built-in"


def test_a_broken_plugin_is_a_one_line_error_when_chosen(site, capsys):
    assert main(["train", "--backend", "broken"]) == 2
    err = capsys.readouterr().err
    assert "plugin bug at import" in err and len(err.strip().splitlines()) == 1


def test_module_path_backends_load_without_registration():
    cls = backends.load("fwbench.backends.numpy_backend:NumpyBackend")
    assert cls.name == "numpy" and backends.source("fwbench.backends.numpy_backend:NumpyBackend") == "module path"


def test_discovery_in_a_fresh_process(site):
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "fwbench", "backends"], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "plugin fake-plugins 1.2.3" in out.stdout


def test_a_mode_is_split_off_and_checked_against_the_backend():
    assert backends.split("flax@scan") == ("flax", "scan")
    assert backends.split("pkg.mod:Cls@fast") == ("pkg.mod:Cls", "fast")
    assert backends.split("numpy") == ("numpy", None)
    assert backends.source("numpy@anything") == "built-in"
    with pytest.raises(backends.BackendError, match="nothing after '@'; write NAME@MODE"):
        backends.split("torch@")
    with pytest.raises(backends.BackendError, match="backend 'numpy' has no mode 'fast'; it has none"):
        backends.load("numpy@fast")


def test_make_backend_passes_a_chosen_mode_only(monkeypatch):
    from fwbench.backends.numpy_backend import NumpyBackend
    from fwbench.harness.session import make_backend
    seen = []

    class Moded(NumpyBackend):
        modes = ("slow", "fast")

        def __init__(self, *args, mode=None, **kw):
            seen.append(mode)
            super().__init__(*args, **kw)
    monkeypatch.setitem(sys.modules, "fake_moded", type(sys)("fake_moded"))
    sys.modules["fake_moded"].Moded = Moded
    spec = __import__("models").get("tinycnn")
    make_backend("fake_moded:Moded@fast", spec, device="cpu", dtype="float32", seed=0, init="canonical")
    make_backend("numpy", spec, device="cpu", dtype="float32", seed=0, init="canonical")  # no mode= for it
    make_backend("fake_moded:Moded", spec, device="cpu", dtype="float32", seed=0, init="canonical")
    assert seen == ["fast", None]


def test_build_passes_a_named_mode_only(moded):
    spec = __import__("models").get("tinycnn")
    b = backends.build(moded, spec, None, device="cpu", dtype="float64", seed=3)
    assert b.mode == "fancy" and b.dtype == "float64" and Moded.built == ["fancy"]
    assert backends.build("test_registry:Moded", spec, None, device="cpu", dtype="float32").mode == "plain"
    assert Moded.built == ["fancy", None]  # no mode named: none passed, the backend's default applies
    assert backends.build("numpy", spec, None, device="cpu", dtype="float32").mode is None
    with pytest.raises(backends.BackendError, match="backend 'moded' has no mode 'shiny'; choose one of plain, fancy"):
        backends.build("test_registry:Moded@shiny", spec, None, device="cpu", dtype="float32")

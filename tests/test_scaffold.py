"""`fwbench new-backend`: the generated package imports, says what to implement, and bad requests are refused."""
import argparse
import importlib
import re
import sys
import tomllib

import numpy as np
import pytest

from fwbench import backends
from fwbench import models
from fwbench.backends.base import Backend, OptimizerConfig
from fwbench.harness import scaffold
from fwbench.models.spec import FIELDS, LAYER_TYPES


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """fwbench-sketch_net/ written into tmp_path and its package imported."""
    args = argparse.Namespace(name="sketch_net", dir=str(tmp_path))
    assert scaffold.new_backend(args) == 0
    root = tmp_path / "fwbench-sketch_net"
    monkeypatch.syspath_prepend(str(root))
    yield root, importlib.import_module("fwbench_sketch_net")
    sys.modules.pop("fwbench_sketch_net", None)


def test_package_layout_and_entry_point(generated):
    root, _ = generated
    # Importing the package may write bytecode (tox does not pass PYTHONDONTWRITEBYTECODE on): not the scaffold's.
    written = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    assert {p.as_posix() for p in written if "__pycache__" not in p.parts} == {
        "pyproject.toml", "README.md", "fwbench_sketch_net/__init__.py", "tests/test_conformance.py"}
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "fwbench-sketch_net"
    assert project["entry-points"]["fwbench.backends"] == {"sketch_net": "fwbench_sketch_net:SketchNetBackend"}
    compile((root / "tests/test_conformance.py").read_text(), "test_conformance.py", "exec")  # valid Python


def test_every_method_raises_not_implemented_with_a_hint(generated):
    _, module = generated
    cls = module.SketchNetBackend
    assert issubclass(cls, Backend) and cls.name == "sketch_net"
    spec = models.get("tinycnn")
    with pytest.raises(NotImplementedError, match="check_device"):
        cls(spec)
    with pytest.raises(NotImplementedError, match="version"):
        cls.version()
    with pytest.raises(NotImplementedError, match="'cuda'"):
        cls.devices()
    with pytest.raises(NotImplementedError, match="TF32"):
        cls.pin_numerics()
    backend = cls.__new__(cls)  # past the unimplemented __init__, to reach the instance methods
    x, y = np.zeros((2, *spec.input)), np.zeros(2, dtype=np.int64)
    calls = {
        "get_params": lambda: backend.get_params(),
        "set_params": lambda: backend.set_params({}),
        "get_buffers": lambda: backend.get_buffers(),
        "set_buffers": lambda: backend.set_buffers({}),
        "set_masks": lambda: backend.set_masks(None),
        "forward": lambda: backend.forward(x),
        "loss_and_grads": lambda: backend.loss_and_grads(x, y),
        "init_optimizer": lambda: backend.init_optimizer(OptimizerConfig()),
        "set_lr": lambda: backend.set_lr(0.1),
        "prepare_batch": lambda: backend.prepare_batch(x, y),
        "train_step": lambda: backend.train_step((x, y)),
        "synchronize": lambda: backend.synchronize(),
        "peak_device_memory": lambda: backend.peak_device_memory(),
    }
    hints = {"forward": ["(N, C, H, W)", "evaluation mode", "running statistics", "no dropout"],
             "loss_and_grads": ["training mode", "batch statistics", "set_masks", "buffers unchanged"],
             "train_step": ["host sync", "training mode", "running statistics"],
             "get_params": ["(out, in, kh, kw)"], "synchronize": ["timer"], "set_lr": ["recompile"],
             "peak_device_memory": ["None on the CPU"],
             "get_buffers": ["'{i}.running_mean'", "spec.buffer_shapes()", "{}"],
             "set_buffers": ["check(self.spec, buffers, 'buffers')"],
             "set_masks": ["'{i}.mask'", "spec.input_of(i)", "None"]}
    for method, call in calls.items():
        with pytest.raises(NotImplementedError, match=rf"sketch_net: implement {method}\(") as info:
            call()
        assert all(hint in str(info.value) for hint in hints.get(method, [])), (method, str(info.value))


def test_the_lowering_table_has_a_placeholder_for_every_layer_type(generated):
    _, module = generated
    assert set(module.LAYERS) == set(LAYER_TYPES.values()) and module.SketchNetBackend.UNSUPPORTED_LAYERS == set()
    for cls, op in module.LAYERS.items():
        with pytest.raises(NotImplementedError, match=rf"sketch_net: implement the op for {cls.type}:"):
            op(None, 0, None, None, None, None)
    with pytest.raises(NotImplementedError, match=r"layer\.pads\(shape\)"):
        module.LAYERS[LAYER_TYPES["conv2d"]](None, 0, None, None, None, None)


def test_the_field_table_names_every_layer_class_and_field(generated):
    root, _ = generated
    text = (root / "fwbench_sketch_net/__init__.py").read_text()
    block = text.split("# Layer fields", 1)[1].split("\n\n", 1)[0]
    entries, name = {}, None
    for line in block.splitlines()[1:]:
        m = re.match(r"#   (\w+)\s+(.*)", line)  # an entry; deeper-indented lines continue it
        if m:
            name = m[1]
            entries[name] = m[2]
        elif name:
            entries[name] += " " + line.lstrip("# ")
    assert set(entries) == {cls.__name__ for cls in LAYER_TYPES.values()}
    for kind, cls in LAYER_TYPES.items():
        assert all(re.search(rf"\b{field}\b", entries[cls.__name__]) for field in FIELDS[kind]), kind
    assert "layer.pads(shape)" in entries["Conv2D"] and "layer.step" in entries["AvgPool2D"]
    assert "layer.step" in entries["MaxPool2D"] and "spec.input_of(i)" in block


@pytest.mark.parametrize("name,needle", [
    ("Mine", "lowercase identifier"),
    ("my-net", "lowercase identifier"),
    ("2fast", "lowercase identifier"),
    ("", "lowercase identifier"),
    ("class", "lowercase identifier"),
    ("numpy", "'numpy' is a built-in backend"),
    ("micrograd", "built-in"),
])
def test_bad_names_are_refused(tmp_path, name, needle):
    with pytest.raises(ValueError, match=needle) as info:
        scaffold.write(name, tmp_path)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_an_existing_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "fwbench-mine").mkdir()
    (tmp_path / "fwbench-mine" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="fwbench-mine already exists"):
        scaffold.write("mine", tmp_path)
    assert [p.name for p in (tmp_path / "fwbench-mine").iterdir()] == ["keep.txt"]


def test_arguments_default_to_the_current_directory():
    parser = argparse.ArgumentParser()
    scaffold.add_arguments(parser)
    args = parser.parse_args(["mine"])
    assert args.name == "mine" and args.dir == "."


def test_a_name_an_installed_plugin_holds_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "fwbench_taken-0.2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fwbench-taken\nVersion: 0.2.0\n")
    (dist / "entry_points.txt").write_text(f"[{backends.GROUP}]\ntaken = fwbench_taken:TakenBackend\n")
    monkeypatch.syspath_prepend(str(site))
    backends.plugins.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"'taken' is already registered \(plugin fwbench-taken 0.2.0\)"):
            scaffold.write("taken", tmp_path)
    finally:
        backends.plugins.cache_clear()
    assert not (tmp_path / "fwbench-taken").exists()

"""One namespace: everything is imported as fwbench.*, so fwbench never shadows a user's own `models` or `harness`."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = {"backends", "models", "harness"}


def bare_imports(path: Path) -> list[str]:
    """Imports in a file that name a top-level backends, models or harness instead of fwbench's."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in OLD]
    return found


def test_no_code_imports_the_old_top_level_names():
    folders = ("backends", "harness", "models", "benchmarks", "examples", "tests")
    found = [hit for folder in folders for path in (ROOT / folder).rglob("*.py") for hit in bare_imports(path)]
    assert found == []


def test_the_command_loads_only_fwbench_modules(tmp_path):
    code = ("import sys, fwbench.harness.cli, fwbench.harness.commands; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('backends', 'models', 'harness')))")
    for cwd in (tmp_path, ROOT):  # the repository root puts its own folders on sys.path: still none of them
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=True)
        assert out.stdout.strip() == "[]", (cwd, out.stdout)
    done = subprocess.run([sys.executable, "-m", "fwbench", "models"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "mlp" in done.stdout, done.stderr


def test_every_package_folder_is_installed():
    """A package left out of pyproject.toml imports from a checkout but not from an installed fwbench (tox)."""
    import tomllib
    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"fwbench." + ".".join(p.parent.relative_to(root).parts)
             for top in ("backends", "harness", "models") for p in (root / top).rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)

"""`fwbench new-backend NAME`: write a plugin package whose every method says what to implement."""
from __future__ import annotations

import argparse
import keyword
import re
from pathlib import Path
from string import Template

from fwbench import backends
from fwbench.harness.scaffold_templates import FILES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the backend's name: a lowercase identifier such as 'mine'")
    p.add_argument("--dir", default=".", help="where to create fwbench-NAME/ (default: the current directory)")


def check_name(name: str) -> None:
    """Raise ValueError unless name can be a new backend's name and a module suffix."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(f"backend name '{name}' must be a lowercase identifier: a letter, then letters, "
                         "digits or underscores (e.g. 'mine')")
    if name in backends.BUILTIN:
        raise ValueError(f"'{name}' is a built-in backend; choose another name")
    if name in backends.plugins():
        # Two plugins under one name: only the first registration would ever load.
        raise ValueError(f"backend '{name}' is already registered ({backends.source(name)}); choose another name")


def render(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the package for name."""
    words = {"name": name, "dist": f"fwbench-{name}", "package": f"fwbench_{name}",
             "cls": "".join(part.capitalize() for part in name.split("_")) + "Backend"}
    return {Template(path).substitute(words): Template(text).substitute(words) for path, text in FILES.items()}


def write(name: str, parent: Path) -> Path:
    """Create parent/fwbench-NAME/ with the package; ValueError if name is refused or the folder exists."""
    check_name(name)
    root = parent / f"fwbench-{name}"
    if root.exists():
        raise ValueError(f"{root} already exists; remove it or choose another --dir")
    files = render(name)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def new_backend(args) -> int:
    """Write the package and say what to do next."""
    root = write(args.name, Path(args.dir))
    print(f"wrote {root}/ (pyproject.toml, README.md, fwbench_{args.name}/__init__.py, tests/test_conformance.py)\n"
          f"next: implement the methods in {root}/fwbench_{args.name}/__init__.py, then\n"
          f"  pip install -e {root}\n"
          f"  fwbench backends\n"
          f"  fwbench conformance {args.name}\n"
          f"  fwbench bench --suite quick --backends numpy,{args.name}\n"
          "the contract, method by method: docs/adding-a-backend.md")
    return 0

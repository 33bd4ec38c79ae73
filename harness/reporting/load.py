"""Find and read results files, checked against the versioned JSON Schema; version 1 files are upgraded on load."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from fwbench.backends.messages import first_line
from fwbench.harness.bench.limits import fill
from fwbench.harness.documents import RESULTS, RESULTS_SCHEMA_FILE, RESULTS_V1
from fwbench.harness.reporting.upgrade import upgrade

DEFAULT_DIR = Path("results")
STAMP = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?\.json$")  # -2, -3...: later runs started in the same second


class ResultsError(ValueError):
    """A results file that cannot be read; the message is one line and names the file."""


def find(paths: list[str] | None) -> list[Path]:
    """Files named, directories expanded to their bench-*.json; no paths means the newest in results/."""
    if not paths:
        runs = _runs(DEFAULT_DIR)
        if not runs:
            raise ResultsError(f"{DEFAULT_DIR}/: no bench-*.json results files; run `fwbench bench` first")
        return runs[-1:]
    out: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            runs = _runs(path)
            if not runs:
                raise ResultsError(f"{path}/: no bench-*.json results files")
            out += runs
        elif path.exists():
            out.append(path)
        else:
            raise ResultsError(f"{path}: no such file or directory")
    return out


def _runs(directory: Path) -> list[Path]:
    """bench-*.json in a directory, oldest first by the timestamp in the name and its -N (then mtime)."""
    def key(p: Path):
        m = STAMP.search(p.name)
        return (m.group(1) if m else "", int(m.group(2) or 1) if m else 0, p.stat().st_mtime)
    return sorted(directory.glob("bench-*.json"), key=key)


def load(path: str | Path) -> dict:
    """The parsed results of one file, or ResultsError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ResultsError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not JSON ({first_line(e)})") from None
    if isinstance(data, dict) and data.get("schema") == RESULTS_V1:
        problem = _problem_v1(data)
        if problem:
            raise ResultsError(f"{path}: {problem}")
        data = upgrade(data)
    problem = problem_in(data)
    if problem:
        raise ResultsError(f"{path}: {problem}")
    fill(data)  # mfu and the FLOP-limited step where the run did not store them (one still running)
    return data


@functools.cache
def _validator(part: str | None = None):
    """The whole document's validator, or one of the schema's $defs' (part="metrics")."""
    import jsonschema  # only reading results needs it
    schema = json.loads(RESULTS_SCHEMA_FILE.read_text())
    if part:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{part}"}
    return jsonschema.Draft202012Validator(schema)


def problem_in(data) -> str | None:
    """What makes data not a valid fwbench.results/2 document (the first error, where it is), or None."""
    if not isinstance(data, dict) or "schema" not in data:
        return f"not a fwbench results file (no \"schema\": \"{RESULTS}\")"
    if data["schema"] != RESULTS:
        return f"unsupported schema {data['schema']!r}; this fwbench reads {RESULTS} and {RESULTS_V1}"
    return _first_error(_validator(), data, data)


def _first_error(validator, value, doc: dict, at: tuple = ()) -> str | None:
    """The first schema error in value (found at `at` in doc) as one line: the field, what is wrong, whose cell."""
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    path = [*at, *error.absolute_path]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{where or 'the document'}: {first_line(error.message)[:200]} (schema {RESULTS_SCHEMA_FILE.name})" \
           + _whose(doc, path)


def _whose(doc: dict, path: list) -> str:
    """"; cells[0] is numpy cnn" when the path is inside a cell that names its backend and model, else ""."""
    if len(path) < 2 or path[0] != "cells" or not isinstance(path[1], int):
        return ""
    cell = doc["cells"][path[1]]
    names = [cell.get(k) for k in ("backend", "model")] if isinstance(cell, dict) else []
    return f"; cells[{path[1]}] is {' '.join(names)}" if names and all(isinstance(n, str) for n in names) else ""


def _problem_v1(data) -> str | None:
    """What makes data not a usable fwbench.results/1 document, or None."""
    if not isinstance(data.get("cells"), list):
        return "\"cells\" must be a list"
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict):
            return f"cells[{i}] is not an object"
        for key in ("backend", "model"):
            if not isinstance(cell.get(key), str):
                return f"cells[{i}] has no \"{key}\""
        if cell.get("status") not in ("ok", "error"):
            return f"cells[{i}] ({cell['backend']} {cell['model']}) has status {cell.get('status')!r}, not ok or error"
        if cell["status"] == "ok" and not isinstance(cell.get("metrics"), dict):
            return f"cells[{i}] ({cell['backend']} {cell['model']}) is ok but has no \"metrics\" object"
        # Checked here because upgrading summarizes the metrics, and a string there would break it.
        problem = _first_error(_validator("metrics"), cell.get("metrics") or {}, data, ("cells", i, "metrics"))
        if problem:
            return problem
    return None

"""`fwbench models` and `fwbench backends`: what is shipped and what is installed."""
from __future__ import annotations

import backends
import models
from harness.table import text_table


def describe(layer) -> str:
    """Short text for one layer, e.g. conv2d(32, k3, s1, p0)."""
    if isinstance(layer, models.Conv2D):
        return f"conv2d({layer.out_channels}, k{layer.kernel_size}, s{layer.stride}, p{layer.padding})"
    if isinstance(layer, models.MaxPool2D):
        return f"maxpool2d({layer.size}, s{layer.step})"
    if isinstance(layer, models.Dense):
        return f"dense({layer.units})"
    return layer.type


def model_table(spec: models.ModelSpec) -> str:
    """Per-layer table: index, layer, output shape and parameter count."""
    shapes = spec.param_shapes()
    rows = [["-", "input", "x".join(map(str, spec.input)), "0"]]
    for i, (layer, shape) in enumerate(zip(spec.layers, spec.shapes)):
        n = sum(_size(s) for k, s in shapes.items() if k.split(".")[0] == str(i))
        rows.append([str(i), describe(layer), "x".join(map(str, shape)), f"{n:,}"])
    title = f"{spec.name}: {spec.param_count():,} parameters"
    return title + "\n" + text_table(["#", "layer", "output", "params"], rows)


def models_summary(names: list[str]) -> str:
    """One row per spec: name, layers, output shape and parameter count."""
    rows = []
    for name in names:
        spec = models.get(name)
        rows.append([spec.name, " > ".join(describe(layer) for layer in spec.layers),
                     "x".join(map(str, spec.shapes[-1])), f"{spec.param_count():,}"])
    return text_table(["name", "layers", "output", "params"], rows)


def backend_rows() -> list[dict]:
    """Status of every registered backend; a broken one never hides the others."""
    return [backend_row(name) for name in backends.names()]


def backend_row(name: str) -> dict:
    """Name, source, framework version, devices and status (ok, missing ..., broken: ...) of one backend."""
    row = {"name": name, "source": backends.source(name), "version": "-", "devices": [], "modes": [], "status": "ok"}
    try:
        cls = backends.load(name)
        row["version"], row["devices"], row["modes"] = cls.version(), cls.devices(), list(cls.modes)
    except backends.MissingDependency as e:
        row["status"] = f"missing dependency: {e}"
    except Exception as e:  # a plugin can fail in any way, in import or in version()/devices()
        reason = str(e) if isinstance(e, backends.BrokenBackend) else f"{type(e).__name__}: {e}"
        row["status"] = f"broken: {reason}".splitlines()[0]
    return row


def backends_table(rows: list[dict]) -> str:
    return text_table(["backend", "source", "version", "devices", "modes (NAME@MODE)", "status"],
                      [[r["name"], r["source"], r["version"], ",".join(r["devices"]) or "-",
                        ",".join(r["modes"]) or "-", r["status"]]
                       for r in rows])


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n

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
    out = []
    for name in backends.names():
        row = {"name": name, "version": "-", "devices": [], "status": "ok"}
        absent = backends.missing(name)
        if absent:
            row["status"] = f"missing {', '.join(absent)}: {backends.BUILTIN[name].install}"
        else:
            try:
                cls = backends.load(name)
                row["version"], row["devices"] = cls.version(), cls.devices()
            except Exception as e:  # a broken install must not break the listing
                row["status"] = f"broken: {type(e).__name__}: {e}".splitlines()[0]
        out.append(row)
    return out


def backends_table(rows: list[dict]) -> str:
    return text_table(["backend", "version", "devices", "status"],
                      [[r["name"], r["version"], ",".join(r["devices"]) or "-", r["status"]] for r in rows])


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n

"""`fwbench models` and `fwbench backends`: what is shipped and what is installed."""
from __future__ import annotations

from fwbench import backends
from fwbench import models
from fwbench.harness.recipe import recipe_for
from fwbench.harness.table import text_table
from fwbench.models.memory import estimate, human
from fwbench.models.params import init_params

# The smallest model every backend should take: one dense layer. Building it costs milliseconds (flax: about
# 0.2 s), and tells a backend that is installed from one that refuses or fails to build anything.
PROBE = {"name": "probe", "input": [1, 2, 2], "classes": 2,
         "layers": [{"type": "flatten"}, {"type": "dense", "units": 2}]}


def model_doc(spec: models.ModelSpec) -> dict:
    """The spec layer by layer, with the memory its recipe needs: what `models NAME` shows, and its --json."""
    shapes = spec.param_shapes()
    layers = [{"index": i, "layer": layer.describe(), "output": list(shape),
               "params": sum(_size(s) for k, s in shapes.items() if k.split(".")[0] == str(i))}
              for i, (layer, shape) in enumerate(zip(spec.layers, spec.shapes))]
    recipe, need = _recipe_need(spec)
    opt = recipe.optimizer
    memory = {"batch_size": recipe.batch_size, "dtype": "float32", "optimizer": opt.name, "total_bytes": need.total,
              **{f"{k}_bytes": getattr(need, k) for k in ("weights", "gradients", "optimizer", "activations")}}
    return {"name": spec.name, "input": list(spec.input), "classes": spec.classes, "parameters": spec.param_count(),
            "layers": layers, "memory": memory}


def model_table(spec: models.ModelSpec) -> str:
    """Per-layer table: index, layer, output shape and parameter count, and the memory line."""
    doc = model_doc(spec)
    rows = [["-", "input", "x".join(map(str, spec.input)), "0"]]
    rows += [[str(r["index"]), r["layer"], "x".join(map(str, r["output"])), f"{r['params']:,}"] for r in doc["layers"]]
    title = f"{spec.name}: {spec.param_count():,} parameters"
    return "\n".join([title, text_table(["#", "layer", "output", "params"], rows), memory_line(spec)])


def memory_line(spec: models.ModelSpec) -> str:
    """What training the spec by its recipe needs in memory, estimated from the spec."""
    recipe, need = _recipe_need(spec)
    return (f"training needs about {human(need.total)} at batch {recipe.batch_size}, float32, "
            f"{recipe.optimizer.name} ({need.parts()})")


def _recipe_need(spec: models.ModelSpec):
    """The spec's recipe and the memory estimate at its batch size, in float32."""
    recipe = recipe_for(spec.name)
    return recipe, estimate(spec, recipe.batch_size, "float32", recipe.optimizer.name, recipe.optimizer.momentum)


def models_docs(names: list[str]) -> list[dict]:
    """One summary per spec: name, layers, output shape and parameter count."""
    out = []
    for name in names:
        spec = models.get(name)
        out.append({"name": spec.name, "layers": [layer.describe() for layer in spec.layers],
                    "output": list(spec.shapes[-1]), "parameters": spec.param_count()})
    return out


def models_summary(names: list[str]) -> str:
    """One row per spec: name, layers, output shape and parameter count."""
    rows = [[d["name"], " > ".join(d["layers"]), "x".join(map(str, d["output"])), f"{d['parameters']:,}"]
            for d in models_docs(names)]
    return text_table(["name", "layers", "output", "params"], rows)


def backend_rows(names: list[str] | None = None) -> list[dict]:
    """Status of the named backends (modes dropped), or of every registered one; a broken one never hides the others."""
    bases = dict.fromkeys(backends.split(name)[0] for name in names or backends.names())
    for base in bases:
        backends.source(base)  # an unknown name is the user's mistake, refused before anything is imported
    return [backend_row(base) for base in bases]


def backend_row(name: str) -> dict:
    """Name, source, framework version, devices and status (ok, missing ..., broken: ...) of one backend."""
    row = {"name": name, "source": backends.source(name), "version": "-", "devices": [], "modes": [], "status": "ok"}
    try:
        cls = backends.load(name)
        with backends.blame(name, "to describe itself"):  # a plugin can fail in any way, in version() or devices()
            row["version"], row["devices"], row["modes"] = cls.version(), list(cls.devices()), backends.modes(name, cls)
        try_build(name, row["devices"])
    except backends.MissingDependency as e:
        row["status"] = f"missing dependency: {e}"
    except backends.BackendError as e:
        row["status"] = f"broken: {e}".splitlines()[0]
    return row


def try_build(name: str, devices: list[str]) -> None:
    """Build the probe model once, in float32 or else float64; the first refusal if neither builds."""
    spec, device = models.parse(PROBE), "cpu" if "cpu" in devices or not devices else devices[0]
    errors = []
    for dtype in ("float32", "float64"):  # micrograd, for one, computes only in float64
        try:
            backends.build(name, spec, init_params(spec, 0, dtype), device=device, dtype=dtype)
            return
        except backends.BackendError as e:
            errors.append(e)
    raise errors[0]


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

"""`fwbench conventions` as data: every probe run on every installed framework, and the drifts, as one document."""
from __future__ import annotations

import importlib
from importlib.util import find_spec

from fwbench.backends.messages import one_line
from fwbench.harness.conventions import drift, probes

# Column -> the modules it needs; "canonical" is fwbench's own engine and needs nothing more.
FRAMEWORKS = {"canonical": (), "torch": ("torch",), "flax": ("flax", "jax", "optax"), "keras": ("tensorflow", "keras")}
OPS = {"canonical": "canonical", "torch": "torch_ops", "flax": "flax_ops", "keras": "keras_ops"}  # of conventions/
# Probe -> (the probe, the op of an ops module it runs).
PROBES = {"batchnorm": (probes.batchnorm, "batchnorm"), "avgpool": (probes.avgpool, "avgpool"),
          "same_padding": (probes.same_padding, "conv"), "adam": (probes.adam, "adam"),
          "sgd": (probes.sgd, "sgd"), "init": (probes.init, "init"), "dropout": (probes.dropout, "dropout")}
HOW = {
    "batchnorm": "one training pass of a fresh layer (running mean 0, var 1) on a channel holding 0 and 2, at the "
                 f"default momentum and at {probes.PROBE_MOMENTUM}; eps from the output for 1 -/+ 2^-7",
    "avgpool": "3 x 3 windows over a 7 x 7 ramp with the stride left out; 3 x 3 at stride 1 and padding 1 over "
               "2 x 2 ones (the corner window's mean 4/9 when the padding's zeros count, 1 when not)",
    "same_padding": "a kernel of one tap, its first, over 5 x 5 distinct values: out[1, 1] = x[s - top, s - left]; "
                    + ", ".join(f"{case} ({k} wide at stride {s})" for case, (k, s) in probes.SAME_CASES.items()),
    "adam": "one step at lr 1 from p = 0: g = eps = 1e-2 places eps; g = 1e-8 at the defaults reads its value; "
            "eps 0 and eps_root g^2 place eps_root",
    "sgd": f"two steps of SGD with momentum {probes.SGD_MOMENTUM} from p = 0, gradient 1, learning rate "
           f"{probes.SGD_LRS[0]:g} then {probes.SGD_LRS[1]:g}: the second update is -(m + 1) lr2 = "
           f"{probes.SGD_PLACEMENTS['outside the buffer']:g} when lr multiplies the buffer, -(m lr1 + lr2) = "
           f"{probes.SGD_PLACEMENTS['inside the buffer']:g} when it is inside it",
    "init": f"fresh dense layers (fan-in {probes.FAN_INS['dense']}) and 3 x 3 convs (fan-in "
            f"{probes.FAN_INS['conv']}), {probes.UNITS} outputs, and one more at the larger fan-in with "
            f"{probes.FEW_UNITS} outputs, seed 0: the family by kurtosis, the scale as c * fan^e, fan the one of "
            f"{' or '.join(probes.FANS)} on whose log the log std lies straightest",
    "dropout": "rate 0.5 over 20,000 ones: two calls in a row after seeding with 0, one after seeding again, "
               "one unseeded",
}


def collect() -> dict:
    """The whole measurement: framework versions, every probe's reading per framework, and the drifts."""
    doc = {"kind": "fwbench.conventions", "version": 1, "frameworks": {}, "probes": HOW, "measured": {},
           "drifts": {"batchnorm": {"how": _bn_how(), "rows": []}, "adam": {"how": _adam_how(), "rows": []}}}
    for name, modules in FRAMEWORKS.items():
        absent = [m for m in modules if find_spec(m) is None]
        if absent:
            doc["frameworks"][name] = {"installed": False, "missing": absent}
            continue
        ops = importlib.import_module(f"fwbench.harness.conventions.{OPS[name]}")
        doc["frameworks"][name] = {"installed": True, "version": ops.version()}
        doc["measured"][name] = {probe: _attempt(lambda: run(getattr(ops, op))) for probe, (run, op) in PROBES.items()}
        if name != "canonical":  # the reference of the drifts
            bn = _attempt(lambda: drift.batchnorm_drift(ops))
            doc["drifts"]["batchnorm"]["rows"] += [{"framework": name, **row} for row in
                                                   (bn if isinstance(bn, list) else [bn])]
            doc["drifts"]["adam"]["rows"].append({"framework": name, **_attempt(lambda: drift.adam_drift(ops))})
    return doc


def _attempt(measure):
    """measure(), or {"error": ...} when the framework fails it: one broken probe must not hide the others."""
    try:
        return measure()
    except Exception as e:  # a framework's API can change in any way
        return {"error": one_line(e)}


def errors(doc: dict) -> list[str]:
    """One line per probe or drift that failed."""
    found = [f"{name} {probe}: {value['error']}" for name, measured in doc["measured"].items()
             for probe, value in measured.items() if "error" in value]
    return found + [f"{row['framework']} {kind} drift: {row['error']}" for kind, part in doc["drifts"].items()
                    for row in part["rows"] if "error" in row]


def _bn_how() -> str:
    """What the batch-norm drift runs."""
    return (f"{drift.STEPS} training-mode passes of a {drift.KERNEL} x {drift.KERNEL} VALID conv ({drift.CHANNELS} "
            f"channels, fixed seeded weights, none updated) then batch norm, over seeded batches of "
            f"{drift.BATCH} x 1 x {drift.SIDE} x {drift.SIDE} from N(1, 2^2), in float32; relative L2 distance of "
            "the running statistics from the canonical rule's (momentum 0.1 on the batch, unbiased variance), "
            "computed in float64")


def _adam_how() -> str:
    """What the Adam drift runs."""
    return (f"{drift.STEPS} steps of the native Adam at its defaults, lr {drift.LR}, on sum(a p^2) / 2 with 32 "
            "curvatures a from 1e-9 to 1e2, in float32; relative L2 distance of p from the fwbench engine's Adam's")

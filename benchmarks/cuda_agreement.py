"""First-step float64 loss and gradients of torch and flax (or the NAME@MODE backends given) on cuda against the
NumPy engine on cpu.

Usage: python benchmarks/cuda_agreement.py [NAME[@MODE] ...]    # default: torch flax
"""
import json
import sys

import numpy as np

from fwbench import backends
from fwbench import models
from fwbench.models.params import init_params


def main(names: list[str]) -> int:
    worst = {}
    for model in ("tinycnn", "cnn", "mlp"):
        spec = models.get(model)
        params = init_params(spec, 0, "float64")
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(16, *spec.input)), rng.integers(0, spec.classes, 16)
        ref_loss, ref = backends.build("numpy", spec, params, device="cpu", dtype="float64").loss_and_grads(x, y)
        for name in names:
            loss, grads = backends.build(name, spec, params, device="cuda", dtype="float64").loss_and_grads(x, y)
            errs = [np.linalg.norm(grads[k] - ref[k]) / np.linalg.norm(ref[k]) for k in ref]
            worst[f"{model}/{name}"] = {"loss_rel": abs(loss - ref_loss) / abs(ref_loss), "grad_rel": max(errs)}
    print(json.dumps(worst, indent=1))
    return 0 if all(v["grad_rel"] <= 1e-10 and v["loss_rel"] <= 1e-10 for v in worst.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["torch", "flax"]))

"""The command line both plain loops share: time steps (one JSON line) or train the full recipe."""
from __future__ import annotations

import argparse
import json
from typing import Callable


def main(name: str, version: str, time_steps: Callable[..., dict], train: Callable[..., None],
         argv: list[str] | None = None, kernels: bool = False) -> int:
    """Parse the arguments, then time steps or train, printing JSON lines; kernels=True offers --kernels (flax)."""
    p = argparse.ArgumentParser(description=f"The reference cnn in plain {name}, without fwbench: "
                                            "time training steps, or train the cnn recipe.")
    p.add_argument("--steps", type=int, default=200, help="timed steps (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps after the first (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--epochs", type=int, default=0,
                   help="train this many epochs of the recipe, printing test accuracy per epoch, instead of timing")
    if kernels:
        p.add_argument("--kernels", action="store_true",
                       help="take fwbench's custom VJPs (backends/flax_kernels.py), as the -tuned modes do")
    args = p.parse_args(argv)
    common = {"seed": args.seed, "batch_size": args.batch_size, "device": args.device}
    if getattr(args, "kernels", False):  # the name lands in the JSON line's "loop": a result says which ops it ran
        name, common["kernels"] = f"{name} + fwbench kernels", True
    if args.epochs:
        train(args.epochs, **common)
        return 0
    result = time_steps(args.steps, args.warmup, **common)
    print(json.dumps({"loop": f"plain {name}", "version": version, "warmup": args.warmup, **common, **result}))
    return 0

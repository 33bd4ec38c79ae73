"""Stock flax's CPU training step under XLA settings, each (setting, round) in a fresh process, rounds interleaved.

Usage: python benchmarks/flax_cpu_settings.py [--model pyex] [--rounds 3] [--steps 100] [--warmup 5]
           [--settings baseline,eigen-conv,...] [--json] [--out results/]
XLA reads XLA_FLAGS once per process, so the parent starts one child (`--child SETTING`) per setting and round, in
a seeded shuffled order each round. A setting's ratio is the median over rounds of its step time over the
baseline's of the same round; max_abs_logit_diff is how far its logits after the same steps are from the baseline's
(the baseline's own rounds give the run-to-run floor). Flags were read from jaxlib 0.10.2 (`XLA_FLAGS=--help`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fwbench.harness import atomic
from fwbench.harness.bench.child import die_with_parent, run
from fwbench.harness.provenance import git_commit, machine
from fwbench.harness.table import markdown_table

# name -> environment variables its child process sets before jax starts
SETTINGS: dict[str, dict[str, str]] = {
    "baseline": {},
    # jaxlib 0.10.2 sends f32 NHWC convs, dots and large reductions to YNNPACK by default (ynn types
    # individual_convolution, individual_dot, reduce); these move work between YNNPACK, Eigen and oneDNN.
    "eigen-conv": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"},
    "no-ynn": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="},
    "ynn-no-reduce": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-reduce"},  # jax-ml/jax#37465
    "ynn-eltwise": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+eltwise"},
    "onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce"},
    "eigen-1-thread": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    # Reassociation and approximate functions in XLA's own kernels: changes numerics by design.
    "fast-math": {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"},
}
ORDER_SEED = 0
CHILD_TIMEOUT_S = 1800


def child(model: str, steps: int, warmup: int) -> dict:
    """In a fresh process with the setting's environment: time the steps, then the logits and the compiled kernels."""
    from numpy_profile import batches, ready  # this folder's helpers: MNIST batches and a canonical Adam backend
    from fwbench import backends
    from fwbench.harness import allocator
    from fwbench.harness.bench.timing import time_steps

    allocator.tune()
    backends.load("flax").pin_numerics()  # as a bench cell does
    count = 1 + warmup + steps
    raw = batches(count)
    backend, prepared = ready("flax", model, raw)
    # No time floors: every child runs exactly `count` steps, so the logits below compare like with like.
    timing = time_steps(backend, prepared, [1e-3] * count, warmup, steps, min_warmup_s=0, min_timed_s=0)
    return {"step_ms": timing["step_ms"], "step_ms_iqr": timing["step_ms_iqr"], "compile_s": timing["compile_s"],
            "logits": backend.forward(raw[0][0]).tolist(), "kernels": kernels(backend, prepared[0]),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "version": backends.load("flax").version()}


def kernels(backend, batch) -> dict:
    """What XLA made of the train step: library fusions by kind, and convolutions left to XLA's Eigen runtime."""
    # A flag can be accepted and change nothing; the compiled program tells that apart from "no faster".
    x, y = batch
    args = backend.params, backend.opt_state, backend.batch_stats, x, y, backend._lr, backend._noise(len(x))
    hlo = backend._step.lower(*args).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]  # fusion bodies hold convolutions too; only the entry's run on their own
    eigen = len(re.findall(r" convolution\(", entry))
    return {**Counter(re.findall(r'"kind":"(__\w+)"', entry)), "eigen_convolution": eigen}


def run_child(name: str, model: str, steps: int, warmup: int) -> dict:
    """One child process for `name`; its JSON line, or the error it died with."""
    cmd = [sys.executable, __file__, "--child", name, "--model", model, "--steps", str(steps), "--warmup", str(warmup)]
    done = run(cmd, CHILD_TIMEOUT_S)  # its own process group, killed with us
    if done.returncode != 0 or done.timed_out:
        return {"error": "timed out" if done.timed_out else done.last_line("stderr")[-300:]}
    return json.loads(done.last_line("stdout"))


def measure(names: list[str], model: str, rounds: int, steps: int, warmup: int) -> list[dict]:
    """Every setting once per round, in an order shuffled with ORDER_SEED; one fresh process each."""
    rng, runs = random.Random(ORDER_SEED), []
    for r in range(rounds):
        order = rng.sample(names, len(names))
        for name in order:
            print(f"round {r + 1}/{rounds}: {name}", file=sys.stderr)
            runs.append({"setting": name, "round": r, **run_child(name, model, steps, warmup)})
    return runs


def summarize(runs: list[dict], names: list[str]) -> dict:
    """Per setting: median step ms, median of per-round ratios to the baseline, largest logit change, kernels."""
    base = {x["round"]: x for x in runs if x["setting"] == "baseline" and "error" not in x}
    if not base:
        raise SystemExit("the baseline failed in every round: " + next(x["error"] for x in runs if "error" in x))
    ref = np.array(base[min(base)]["logits"])
    out = {}
    for name in names:
        ok = [x for x in runs if x["setting"] == name and "error" not in x]
        if not ok:
            out[name] = {"error": next(x["error"] for x in runs if x["setting"] == name)}
            continue
        ratios = [x["step_ms"] / base[x["round"]]["step_ms"] for x in ok if x["round"] in base]
        out[name] = {"step_ms": statistics.median(x["step_ms"] for x in ok), "step_ms_each": [x["step_ms"] for x in ok],
                     "ratio": statistics.median(ratios) if ratios else None, "ratio_each": ratios,
                     "max_abs_logit_diff": max(float(np.abs(np.array(x["logits"]) - ref).max()) for x in ok),
                     "kernels": ok[0]["kernels"], "xla_flags": ok[0]["xla_flags"]}
    return out


def table(summary: dict) -> str:
    """The summary as a Markdown table."""
    rows = []
    for name, s in summary.items():
        if "error" in s:
            rows.append([name, SETTINGS[name].get("XLA_FLAGS", ""), "failed", "", "", "", s["error"]])
            continue
        ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else "n/a"
        rows.append([name, s["xla_flags"], f"{s['step_ms']:.2f}", ratio, " ".join(f"{r:.3f}" for r in s["ratio_each"]),
                     f"{s['max_abs_logit_diff']:.2e}", ", ".join(f"{k} {v}" for k, v in sorted(s["kernels"].items()))])
    return markdown_table(["setting", "XLA_FLAGS", "step ms", "ratio to baseline", "each round",
                           "max abs logit diff", "compiled step"], rows, "llrrlrl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pyex")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after the compiling one")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {','.join(SETTINGS)}")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON document")
    p.add_argument("--out", type=Path, help="folder to write a new flax-cpu-settings-<time>.json in")
    p.add_argument("--child", metavar="SETTING", choices=SETTINGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        # Before anything imports jax (nothing above does): XLA parses XLA_FLAGS once, when its backend starts.
        # The caller's own XLA_FLAGS are dropped, so that the baseline is jaxlib's defaults.
        os.environ.pop("XLA_FLAGS", None)
        os.environ.update(SETTINGS[args.child])
        die_with_parent()
        print(json.dumps(child(args.model, args.steps, args.warmup)))
        return 0
    names = ["baseline"] + [n for n in args.settings.split(",") if n != "baseline"]  # ratios need the baseline
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    if args.out:
        try:
            atomic.ensure_dir(args.out)  # before minutes of timing, not after
        except ValueError as e:
            p.error(str(e))
    runs = measure(names, args.model, args.rounds, args.steps, args.warmup)
    summary = summarize(runs, names)
    doc = {"summary": summary, "runs": [{k: v for k, v in x.items() if k != "logits"} for x in runs],
           "settings": {n: SETTINGS[n] for n in names}, "model": args.model, "rounds": args.rounds,
           "steps": args.steps, "warmup": args.warmup, "order_seed": ORDER_SEED,
           "version": next((x["version"] for x in runs if "version" in x), None),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(), "machine": machine(),
           "how": "stock flax (mode step), canonical init, Adam, float32, batch 64 MNIST; one process per setting "
                  "and round; step_ms is the median of the timed steps; ratio the median over rounds of "
                  "step_ms / the same round's baseline step_ms; max_abs_logit_diff the largest |logit - baseline "
                  "round 0's| on batch 0 after the same 1 + warmup + steps steps"}
    print(json.dumps(doc) if args.json else table(summary))
    if args.out:
        path = atomic.claim(args.out, atomic.stamped("flax-cpu-settings"), atomic.encode_json(doc))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

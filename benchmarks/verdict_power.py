"""How often `report --compare` catches a slower cell at a machine's measured noise: a resampling simulation.

Usage: python benchmarks/verdict_power.py RESULTS.json... [--effect 1.25] [--cells 10] [--runs 3,5,8,10,12]
       [--sims 200] [--scale 1.0] [--seed 1]

The noise is the measured one: every clean run's log step time minus its cell's median log, pooled over the
given results files (use same-code A/A runs). Each simulated comparison draws `cells` cells of `runs` runs a
side from that pool, makes the first cell `effect` times slower in B, and asks the verdict code
(harness.reporting.verdicts.judge, Holm over all cells) what it sees. --scale multiplies the deviations, to ask
what a quieter or noisier machine would give.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fwbench.harness import stats  # noqa: E402
from fwbench.harness.reporting.verdicts import FASTER, SLOWER, Question, judge  # noqa: E402


def deviations(paths: list[str]) -> list[float]:
    """Each clean run's log step time minus its cell's median log step time."""
    out = []
    for path in paths:
        for cell in json.loads(Path(path).read_text())["cells"]:
            logs = [math.log(r["metrics"]["step_ms"]) for r in cell.get("runs", [])
                    if r["status"] == "ok" and not r["contention"]["contended"]]
            if len(logs) >= 3:
                mid = stats.median(logs)
                out += [x - mid for x in logs]
    return out


def simulate(dev: list[float], runs: int, cells: int, effect: float, sims: int, rng: random.Random) -> tuple[int, int]:
    """(comparisons that called the slower cell slower, comparisons with a verdict on an unchanged cell)."""
    caught = false = 0
    shift = math.log(effect)
    for _ in range(sims):
        qs = [Question([math.exp(rng.choice(dev)) for _ in range(runs)],
                       [math.exp(rng.choice(dev) + (shift if k == 0 else 0.0)) for _ in range(runs)])
              for k in range(cells)]
        verdicts = judge(qs)
        caught += verdicts[0].word == SLOWER
        false += any(v.word in (FASTER, SLOWER) for v in verdicts[1:])
    return caught, false


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results files of same-code runs (their noise is resampled)")
    p.add_argument("--effect", type=float, default=1.25)
    p.add_argument("--cells", type=int, default=10)
    p.add_argument("--runs", default="3,5,8,10,12")
    p.add_argument("--sims", type=int, default=200)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    dev = [args.scale * d for d in deviations(args.results)]
    if len(dev) < 10:
        print("verdict_power: fewer than 10 clean runs in cells of 3 or more; give more results files", file=sys.stderr)
        return 2
    mad = 1.4826 * stats.median([abs(d) for d in dev])
    print(f"{len(dev)} runs, spread (scaled MAD of log step time) {100 * mad:.1f}%; one of {args.cells} cells "
          f"{args.effect:.2f}x slower, {args.sims} simulated comparisons per row\n")
    print("| runs a side | slower cell caught | a verdict on an unchanged cell |\n| ---: | ---: | ---: |")
    for runs in (int(r) for r in args.runs.split(",")):
        # A generator per row, so a row reads the same whichever other rows are asked for.
        caught, false = simulate(dev, runs, args.cells, args.effect, args.sims, random.Random(f"{args.seed}/{runs}"))
        print(f"| {runs} | {100 * caught / args.sims:.0f}% | {100 * false / args.sims:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

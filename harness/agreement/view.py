"""Text views of an agreement run: the per-tensor table, the worst cells and the verdict."""
from __future__ import annotations

import sys

from fwbench.harness.agreement.agree import StepReport, Trajectory, worst
from fwbench.harness.agreement.metrics import DESCRIPTIONS, METRICS
from fwbench.harness.table import text_table


def step_table(report: StepReport, metric: str = "rel_l2", bold: bool | None = None) -> str:
    """Rows are tensors in layer order, columns backend pairs; the worst cell is starred (and bold on a tty)."""
    bold = sys.stdout.isatty() if bold is None else bold
    pairs = list(next(iter(report.table.values())))
    worst_row, worst_pair, _ = worst(report, metric)
    rows = []
    for row in report.rows:
        cells = [f"{row} (floor)" if row in report.floored else row]
        for pair in pairs:
            text = f"{report.table[row][pair][metric]:.2e}"
            if (row, pair) == (worst_row, worst_pair):
                text = f"\x1b[1m{text}*\x1b[0m" if bold else f"{text}*"
            cells.append(text)
        rows.append(cells)
    table = f"{DESCRIPTIONS[metric]}, * marks the worst\n" + text_table(["tensor", *pairs], rows)
    if report.floored:
        table += (f"\n(floor): zero in exact arithmetic, so rounding noise everywhere; judged against the floor "
                  f"{report.floor:.3g} (ZERO_FLOOR x the largest gradient's norm), not its own norm")
    return table


def worst_lines(report: StepReport) -> list[str]:
    """The worst value of each measure, with where it occurs."""
    out = []
    for metric in METRICS:
        row, pair, value = worst(report, metric)
        shown = f"1 - {1 - value:.3g}" if metric == "cosine" else f"{value:.3g}"  # cosines all read 1.0 otherwise
        out.append(f"worst {DESCRIPTIONS[metric]}: {shown} at {row}, {pair}")
    return out


def trajectory_lines(traj: Trajectory) -> list[str]:
    """Final losses and parameter drift of every pair, with the largest drift seen on the way."""
    steps = len(next(iter(traj.losses.values())))
    out = [f"trajectory: {steps} steps in lockstep"]
    out += [f"  final loss {name}: {values[-1]:.6f}" for name, values in traj.losses.items()]
    for what, series in (("parameter", traj.distance), ("buffer", traj.buffers)):
        out += [f"  {what} drift {pair}: {d[-1]:.3g} after {steps} steps (largest {max(d):.3g})"
                for pair, d in series.items()]
    out += [f"  evaluation logits {pair}: {m['rel_l2']:.3g} relative after {steps} steps"
            for pair, m in traj.logits.items()]
    out += [f"  {name}: every worker holds {'identical' if same else 'DIFFERENT'} parameters"
            for name, same in traj.replicas.items()]
    return out


def ties_lines(conventions: dict[str, dict]) -> list[str]:
    """Each framework's measured subgradient conventions."""
    return [f"  {name}: relu'(0) = {c['relu_grad_at_zero']:g}, max-pool ties -> {c['maxpool_tie']}"
            for name, c in conventions.items()]

"""Figures for the HTML report, each returned as a PNG data URI (or None with a note when data is missing)."""
from __future__ import annotations

import base64
import io

from fwbench.harness.reporting.tables import labeller, models_in

Plot = tuple[str | None, str]  # (data URI, note); the note says why a plot was skipped


def figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas; pyplot's global state is never touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def data_uri(fig) -> str:
    """The figure as an inline base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colours(results: dict) -> dict[str, str]:
    """One colour per backend, the same in every figure."""
    names = list(dict.fromkeys(c["backend"] for c in results["cells"]))
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _ok(results: dict, model: str, has) -> list[dict]:
    return [c for c in results["cells"] if c["model"] == model and c["status"] == "ok" and has(c)]


def loss_curves(results: dict) -> Plot:
    """Training loss against step, one subplot per model, one line per cell."""
    has = lambda c: bool((c.get("curves") or {}).get("loss"))  # noqa: E731
    shown = [m for m in models_in(results) if _ok(results, m, has)]
    if not shown:
        return None, "No loss curves in this run (timing-only or failed cells)."
    label, colour = labeller(results["cells"]), colours(results)
    fig = figure(5 * len(shown), 3.6)
    for ax, model in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
        for cell in _ok(results, model, has):
            steps, losses = zip(*[(p[0], p[1]) for p in cell["curves"]["loss"]])
            ax.plot(steps, losses, label=label(cell), color=colour[cell["backend"]], linewidth=1.2)
        ax.set(title=model, xlabel="step", ylabel="training loss", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return data_uri(fig), ""


def _interval(cell: dict) -> tuple[float, float]:
    """images/s at the ends of the step time's 95% interval; the value itself (no bar) without one."""
    value = cell["metrics"]["images_per_s"]
    ci = ((cell.get("uncertainty") or {}).get("step_ms") or {}).get("ci")
    if not ci:
        return value, value
    return cell["batch_size"] / ci[1] * 1e3, cell["batch_size"] / ci[0] * 1e3


def throughput(results: dict) -> Plot:
    """Images per second of every cell with error bars from its runs, one subplot per model (their scales differ)."""
    has = lambda c: (c.get("metrics") or {}).get("images_per_s") is not None  # noqa: E731
    shown = [m for m in models_in(results) if _ok(results, m, has)]
    if not shown:
        return None, "No throughput figures in this run."
    label, colour = labeller(results["cells"]), colours(results)
    fig = figure(5 * len(shown), 3.6)
    for ax, model in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
        cells = _ok(results, model, has)
        values = [c["metrics"]["images_per_s"] for c in cells]
        low, high = zip(*[_interval(c) for c in cells])
        bars = ax.bar([label(c) for c in cells], values, color=[colour[c["backend"]] for c in cells],
                      yerr=[[v - lo for v, lo in zip(values, low)], [hi - v for v, hi in zip(values, high)]],
                      capsize=4, ecolor="#333")
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        ax.set(title=model, ylabel="images / s")
        ax.margins(y=0.15)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return data_uri(fig), ""

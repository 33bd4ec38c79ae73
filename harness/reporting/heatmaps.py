"""Heatmap figures for the HTML report: the agreement table and the first conv layer's filters."""
from __future__ import annotations

import math

import numpy as np

from fwbench.harness.reporting.plots import Plot, data_uri, figure
from fwbench.harness.reporting.tables import labeller

MAX_FILTERS = 32
FILTER_COLUMNS = 8


def agreement(results: dict, model: str) -> Plot:
    """log10 relative L2 of every parameter's gradient, per backend pair, each cell annotated with its value."""
    table = ((results.get("agreement") or {}).get(model) or {}).get("table") or {}
    if not table:
        return None, f"No agreement table for {model} in this run."
    rows = list(table)
    pairs = list(dict.fromkeys(p for r in rows for p in table[r]))
    values = np.array([[table[r].get(p, np.nan) for p in pairs] for r in rows], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log10(values), np.nan)  # exact zeros and gaps stay blank
    fig = figure(2 + 1.3 * len(pairs), 1.4 + 0.45 * len(rows))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(logs), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(pairs)), pairs, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    low, high = image.get_clim()
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v):
            continue
        dark = v > 0 and (logs[i, j] - low) < 0.5 * (high - low or 1)
        ax.text(j, i, "0" if v == 0 else f"{v:.1e}", ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="log10 relative L2")
    ax.set_title(f"{model}: gradient difference per parameter and backend pair")
    return data_uri(fig), ""


def _mosaic(weight: np.ndarray) -> np.ndarray:
    """Filters [:, 0], each scaled to its own max |w|, tiled in rows of 8 with one-pixel NaN gaps."""
    kernels = weight[:MAX_FILTERS, 0]
    scale = np.abs(kernels).reshape(len(kernels), -1).max(axis=1)
    kernels = kernels / np.where(scale > 0, scale, 1)[:, None, None]
    n, kh, kw = kernels.shape
    cols = min(FILTER_COLUMNS, n)
    rows = math.ceil(n / cols)
    out = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for k, kernel in enumerate(kernels):
        r, c = divmod(k, cols)
        out[r * (kh + 1):r * (kh + 1) + kh, c * (kw + 1):c * (kw + 1) + kw] = kernel
    return out


def filters(results: dict, model: str) -> Plot:
    """The first conv layer's learned filters (input channel 0, up to 32) of each backend, side by side."""
    label = labeller(results["cells"])
    cells = [c for c in results["cells"] if c["model"] == model and c["status"] == "ok"
             and np.ndim(c.get("filters") or 0) == 4]
    if not cells:
        return None, f"No first-layer filters recorded for {model} (no conv layer, or timing-only cells)."
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#8c8c8c")  # grey gaps, distinct from white-ish zeros
    per_row = min(3, len(cells))
    grid_rows = math.ceil(len(cells) / per_row)
    fig = figure(4.2 * per_row + 0.8, 2.4 * grid_rows)
    axes = fig.subplots(grid_rows, per_row, squeeze=False).ravel()
    for ax, cell in zip(axes, cells):
        weight = np.asarray(cell["filters"], dtype=float)
        image = ax.imshow(_mosaic(weight), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{label(cell)} ({min(len(weight), MAX_FILTERS)} of {len(weight)})", fontsize=9)
        ax.set_axis_off()
    for ax in axes[len(cells):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[:len(cells)]), label="w / max |w| of the filter", shrink=0.8)
    kh, kw = weight.shape[2:]
    fig.suptitle(f"{model}: first conv layer, learned {kh}x{kw} filters (input channel 0)", fontsize=10)
    return data_uri(fig), ""

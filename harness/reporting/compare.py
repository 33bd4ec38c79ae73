"""Two runs side by side: per-metric ratios B/A for matching cells, regressions flagged, and what differs."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.reporting import fmt
from harness.reporting.markdown import cell as md

KEY = ("backend", "model", "batch_size", "device")
LOWER, HIGHER, ACCURACY, INFO = "lower", "higher", "accuracy", "info"
ACCURACY_DROP_PP = 0.5  # percentage points; accuracy noise is absolute, not relative
REGRESSION, BETTER = "**REGRESSION**", "better"

# (metric, header, which way is better, format); INFO metrics are shown but never flagged (too noisy).
METRICS = [
    ("step_ms", "step ms", LOWER, fmt.ms),
    ("images_per_s", "images/s", HIGHER, fmt.count),
    ("epoch_s", "epoch s", LOWER, fmt.seconds),
    ("compile_s", "compile s", INFO, lambda v: fmt.seconds(v, 3)),
    ("peak_rss_mb", "peak MB", LOWER, fmt.count),
    ("gpu_peak_mb", "GPU peak MB", LOWER, fmt.count),
    ("test_accuracy", "accuracy", ACCURACY, fmt.percent),
    ("time_to_accuracy_s", "time to accuracy s", INFO, lambda v: fmt.seconds(v, 1)),
    ("agreement_worst_rel_l2", "worst grad diff", INFO, fmt.sci),
]


@dataclass
class Line:
    """One compared metric of one matched cell."""
    cell: str
    metric: str
    a: str
    b: str
    change: str
    flag: str


def merged(results: dict) -> dict[tuple, dict]:
    """Cells by (backend, model, batch size, device); repeats merge to the median of each metric."""
    groups: dict[tuple, list[dict]] = {}
    for c in results["cells"]:
        groups.setdefault(tuple(c.get(k) for k in KEY), []).append(c)
    out = {}
    for key, cells in groups.items():
        ok = [c for c in cells if c["status"] == "ok"]
        if not ok:
            out[key] = {"status": "error", "error": fmt.one_line(cells[0].get("error"))}
            continue
        metrics = {}
        for name, *_ in METRICS:
            values = [c["metrics"].get(name) for c in ok if isinstance(c["metrics"].get(name), (int, float))]
            metrics[name] = statistics.median(values) if values else None
        out[key] = {"status": "ok", "metrics": metrics}
    return out


def judge(kind: str, a: float, b: float, threshold: float) -> tuple[str, str]:
    """(change as text, flag) for one metric going from a to b."""
    if kind == ACCURACY:
        pp = 100 * (b - a)
        flag = REGRESSION if pp < -ACCURACY_DROP_PP else BETTER if pp > ACCURACY_DROP_PP else ""
        return f"{pp:+.2f} pp", flag
    if a == 0:
        return fmt.DASH, ""
    ratio = b / a
    flag = ""
    if kind == LOWER:
        flag = REGRESSION if ratio > 1 + threshold else BETTER if ratio < 1 - threshold else ""
    elif kind == HIGHER:
        flag = REGRESSION if ratio < 1 - threshold else BETTER if ratio > 1 + threshold else ""
    return f"{ratio:.3f}x", flag


def lines(a: dict, b: dict, threshold: float) -> tuple[list[Line], list[str], list[str]]:
    """Compared metrics of every matched cell, and the labels of cells only in A and only in B."""
    cells_a, cells_b = merged(a), merged(b)
    out = []
    for key in [k for k in cells_a if k in cells_b]:
        label = f"{key[0]} {key[1]} batch {key[2]} {key[3]}"
        ca, cb = cells_a[key], cells_b[key]
        if ca["status"] != "ok" or cb["status"] != "ok":
            show = lambda c: "ok" if c["status"] == "ok" else f"failed: {c['error']}"  # noqa: E731
            flag = REGRESSION if ca["status"] == "ok" else "" if cb["status"] != "ok" else "fixed"
            out.append(Line(label, "status", show(ca), show(cb), fmt.DASH, flag))
            continue
        for name, header, kind, form in METRICS:
            va, vb = ca["metrics"][name], cb["metrics"][name]
            if va is None or vb is None:
                continue
            change, flag = judge(kind, va, vb, threshold)
            out.append(Line(label, header, form(va), form(vb), change, flag))
    only = lambda x, y: [f"{k[0]} {k[1]} batch {k[2]} {k[3]}" for k in x if k not in y]  # noqa: E731
    return out, only(cells_a, cells_b), only(cells_b, cells_a)


def differences(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """(field, A, B) for every provenance field that differs: machine, commit, framework versions, suite, date."""
    def facts(r: dict) -> dict[str, str]:
        m, git = r.get("machine") or {}, r.get("git") or {}
        out = {f"machine {k}": str(m.get(k)) for k in ("cpu", "cores", "ram_gb", "os", "python")}
        out["machine gpu"] = ", ".join(g.get("name", "?") for g in m.get("gpu") or []) or "no GPU"
        out["commit"] = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
        out.update((f"{k} version", str(v)) for k, v in (r.get("frameworks") or {}).items())
        out.update(suite=str(r.get("suite")), started=str(r.get("started")))
        return out
    fa, fb = facts(a), facts(b)
    return [(k, fa.get(k, fmt.DASH), fb.get(k, fmt.DASH)) for k in dict.fromkeys([*fa, *fb])
            if fa.get(k) != fb.get(k)]


def render(name_a: str, a: dict, name_b: str, b: dict, threshold: float = 0.10) -> str:
    """The comparison as Markdown, regressions first."""
    found, only_a, only_b = lines(a, b, threshold)
    bad = [x for x in found if x.flag == REGRESSION]
    out = [f"# fwbench compare: {md(name_b)} against {md(name_a)}", "",
           f"Ratios are B/A (B = {md(name_b)}, A = {md(name_a)}). {REGRESSION} marks a time or memory ratio "
           f"above {1 + threshold:.2f}, an images/s ratio below {1 - threshold:.2f}, an accuracy drop of more than "
           f"{ACCURACY_DROP_PP} percentage points, or a cell that failed in B only. Repeats are merged by median; "
           "compile s, time to accuracy and gradient difference are shown but not judged.", ""]
    out += [f"**{len(bad)} regression{'s' if len(bad) != 1 else ''}**" + (":" if bad else "."), ""]
    out += [f"- {md(x.cell)}: {x.metric} {md(x.a)} → {md(x.b)}" + ("" if x.change == fmt.DASH else f" ({x.change})")
            for x in bad]
    out += ["", "## What differs between the runs", ""]
    diff = differences(a, b)
    if [d for d in diff if d[0] != "started"]:
        out += ["| | A | B |", "| --- | --- | --- |"] + [f"| {k} | {md(x)} | {md(y)} |" for k, x, y in diff]
    else:
        out.append("Same machine, commit, suite and framework versions" + (f"; started {md(diff[0][1])} and "
                                                                             f"{md(diff[0][2])}." if diff else "."))
    out += ["", "## Per cell", "", "| cell | metric | A | B | B/A | |", "| --- | --- | ---: | ---: | ---: | --- |"]
    out += [f"| {md(x.cell)} | {x.metric} | {md(x.a)} | {md(x.b)} | {x.change} | {x.flag} |" for x in found]
    for side, names in (("A", only_a), ("B", only_b)):
        if names:
            out += ["", f"Only in {side}: " + ", ".join(md(n) for n in names) + "."]
    return "\n".join(out) + "\n"

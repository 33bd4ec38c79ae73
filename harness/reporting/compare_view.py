"""The run-to-run comparison as Markdown: regressions first, the machine, then every cell's ratios and verdicts."""
from __future__ import annotations

from fwbench.harness import fmt
from fwbench.harness.reporting.verdicts import ALPHA, MIN_RUNS, UNSTABLE
from fwbench.harness.table import markdown_table, md_cell as md

# A common shift this far from the calibration's machine ratio is worth a warning: it may be a real change
# that touched every backend (the harness, a shared library), which removing the shift would hide.
SHIFT_WARNING = 0.10


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


def machine_lines(found: dict) -> list[str]:
    """The machine ratio, the common shift removed from time metrics, and a warning when they disagree."""
    shift, machine = found["shift"], found["machine"]
    out = ["## The machine", ""]
    out.append(f"- Calibration (float32 matmul): B's machine is {machine:.3f}x A's in time"
               if machine else "- Calibration: not recorded in both runs.")
    if shift is None:
        out.append("- Common shift: not removed (fewer than 3 matched cells to estimate it from).")
    else:
        out.append(f"- Common shift: {shift:.3f}x, the median over matched cells of B/A step time. Time metrics are "
                   "judged after dividing B by it (the adjusted column); the raw column is as measured.")
        if machine and abs(shift / machine - 1) > SHIFT_WARNING:
            out.append(f"- **Warning**: the common shift ({shift:.3f}x) is not explained by the calibration "
                       f"({machine:.3f}x). A change that slowed every backend alike would look like this; compare "
                       "the raw column.")
    return out


def render(name_a: str, a: dict, name_b: str, b: dict, found: dict) -> str:
    """The comparison as Markdown, regressions first."""
    bad = found["regressions"]
    out = [f"# fwbench compare: {md(name_b)} against {md(name_a)}", "",
           f"B = {md(name_b)}, A = {md(name_a)}; ratios are B/A. Each time and memory verdict comes from the runs' "
           "per-process figures: a Mann-Whitney rank test (Welch's t on logs where there are too few runs for the "
           f"rank test to reach its level), Holm-corrected at {ALPHA} over the cells judged on each metric, and a "
           f"change beyond the noise band of {100 * found['band']:.0f}%. No verdict with fewer than {MIN_RUNS} runs "
           f"a side, a run-to-run spread over {100 * UNSTABLE:.0f}%, or a contended cell. Accuracy is worse when it "
           "drops beyond the larger of its run-to-run range and the test set's sampling noise.", ""]
    out += [f"**{len(bad)} regression{'s' if len(bad) != 1 else ''}**" + (":" if bad else "."), ""]
    out += [f"- {md(x.cell)}: {x.metric} {md(x.a)} → {md(x.b)}: {md(x.verdict.text())}" for x in bad]
    out += [""] + machine_lines(found)
    out += ["", "## What differs between the runs", ""]
    diff = differences(a, b)
    if [d for d in diff if d[0] != "started"]:
        out.append(markdown_table(["", "A", "B"], diff, "lll"))
    else:
        out.append("Same machine, commit, suite and framework versions" + (f"; started {md(diff[0][1])} and "
                                                                             f"{md(diff[0][2])}." if diff else "."))
    rows = [[x.cell, x.metric, x.a, x.b, x.raw, x.adjusted,
             f"**{x.verdict.text()}**" if x.regression else x.verdict.text()] for x in found["lines"]]
    out += ["", "## Per cell", "",
            markdown_table(["cell", "metric", "A", "B", "raw B/A", "adjusted B/A", "verdict"], rows, "llrrrrl")]
    for side, names in (("A", found["only_a"]), ("B", found["only_b"])):
        if names:
            out += ["", f"Only in {side}: " + ", ".join(md(n) for n in names) + "."]
    return "\n".join(out) + "\n"

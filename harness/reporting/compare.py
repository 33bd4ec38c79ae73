"""Run against run: every judged metric of every matched cell gets a ratio, its interval and a verdict."""
from __future__ import annotations

import math
from dataclasses import dataclass

from fwbench.harness import stats
from fwbench.harness.bench.metrics import ACCURACY, BY_KEY, MEMORY, TIME, Metric
from fwbench.harness.bench.results import key as cell_key
from fwbench.harness import fmt
from fwbench.harness.reporting.baseline import runs_of
from fwbench.harness.reporting.verdicts import FASTER, NO_DIFFERENCE, NOISE_BAND, NONE, SLOWER, Question, Verdict, judge

JUDGED = [m for m in BY_KEY.values() if m.judged]
SHOWN = [BY_KEY[k] for k in ("compile_s", "time_to_accuracy_s", "agreement_worst_rel_l2")]
MIN_CELLS_FOR_SHIFT = 3  # fewer cells than this cannot tell a machine shift from a change in one of them


@dataclass
class Line:
    """One compared metric of one matched cell."""
    cell: str
    metric: str
    a: str
    b: str
    raw: str          # B/A as measured
    adjusted: str     # B/A after removing the common machine shift (time metrics)
    verdict: Verdict
    regression: bool
    values: tuple = ()  # A, B, raw B/A and adjusted B/A as numbers, for --json; none on a status line


def label(k: tuple) -> str:
    return f"{k[0]} {k[1]} batch {k[2]} {k[3]}" + ("" if k[4] in (None, "float32") else f" {k[4]}")


def cells_by_key(results: dict) -> dict[tuple, dict]:
    return {cell_key(c): c for c in results["cells"]}


def machine_ratio(a: dict, b: dict) -> float | None:
    """B's calibrated matmul speed over A's, inverted so that above 1 means B's machine was slower."""
    def speed(r):
        cal = [v.get("matmul_gflops") for v in (r.get("calibration") or {}).values() if isinstance(v, dict)]
        cal = [x for x in cal if x]
        return stats.median(cal) if cal else None
    sa, sb = speed(a), speed(b)
    return sa / sb if sa and sb else None


def common_shift(pairs: list[tuple[dict, dict]]) -> float | None:
    """The median over cells of B/A median step time: what the machine, not any one backend, changed."""
    logs = [math.log(b["metrics"]["step_ms"] / a["metrics"]["step_ms"]) for a, b in pairs
            if a["status"] == b["status"] == "ok" and a["metrics"].get("step_ms") and b["metrics"].get("step_ms")]
    return math.exp(stats.median(logs)) if len(logs) >= MIN_CELLS_FOR_SHIFT else None


def accuracy_verdict(a: dict, b: dict) -> Verdict:
    """A drop beyond the larger of the run-to-run range and the test set's own sampling noise is worse."""
    va, vb = a["metrics"].get("test_accuracy"), b["metrics"].get("test_accuracy")
    n = min(a.get("test_images") or 10000, b.get("test_images") or 10000)
    runs = runs_of(a, "test_accuracy") + runs_of(b, "test_accuracy")
    binomial = 1.96 * math.sqrt(2 * va * (1 - va) / n)  # the difference of two independent test-set estimates
    allowed = max(binomial, max(runs) - min(runs) if len(runs) > 2 else 0.0)
    drop = va - vb
    if drop > allowed:
        return Verdict("lower", vb / va, why=f"{100 * drop:.2f} pp > {100 * allowed:.2f} pp allowed", worse=True)
    if -drop > allowed:
        return Verdict("higher", vb / va, why=f"+{100 * -drop:.2f} pp")
    return Verdict("within noise", vb / va, why=f"{100 * -drop:+.2f} pp, within {100 * allowed:.2f} pp")


def compare(a: dict, b: dict, band: float = NOISE_BAND) -> dict:
    """Everything the comparison found: lines, regressions, shift, machine ratio, unmatched cells."""
    ca, cb = cells_by_key(a), cells_by_key(b)
    keys = [k for k in ca if k in cb]
    pairs = [(ca[k], cb[k]) for k in keys]
    shift = common_shift(pairs)
    lines: list[Line] = []
    # Holm corrects over the cells of one metric and reading (as measured, or after removing the shift).
    families: dict[tuple, tuple[list[Question], list[Line]]] = {}
    for k, (x, y) in zip(keys, pairs):
        if x["status"] != "ok" or y["status"] != "ok":
            failed = y["status"] != "ok" and x["status"] == "ok"
            word = "fails in B" if failed else "fixed in B" if x["status"] != "ok" and y["status"] == "ok" else NONE
            show = lambda c: "ok" if c["status"] == "ok" else f"failed: {fmt.one_line(c.get('error'))}"  # noqa: E731
            lines.append(Line(label(k), "status", show(x), show(y), fmt.DASH, fmt.DASH, Verdict(word), failed))
            continue
        for metric in JUDGED + SHOWN:
            va, vb = x["metrics"].get(metric.key), y["metrics"].get(metric.key)
            if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)):
                continue
            raw = vb / va if va else None
            adjust = shift if metric.judged == TIME and shift else 1.0
            adjusted = raw / adjust if raw is not None else None
            line = Line(label(k), metric.header or metric.key, metric.form(va), metric.form(vb),
                        _ratio(raw), _ratio(adjusted), Verdict(NONE), False, (va, vb, raw, adjusted))
            lines.append(line)
            if metric.judged == ACCURACY:
                line.verdict = accuracy_verdict(x, y)
                line.regression = line.verdict.worse
            elif metric.judged in (TIME, MEMORY):
                # Contention slows a run; it does not change how much memory the run's process holds.
                flag = "training_contended" if metric.training else "contended"
                blocked = "contended" if metric.judged == TIME and (x.get(flag) or y.get(flag)) else None
                # A time metric is also judged as measured (both_readings); memory has no shift to remove.
                readings = ((adjust, "adjusted"), (1.0, "raw")) if metric.judged == TIME else ((1.0, "adjusted"),)
                for divide, reading in readings:
                    questions, slots = families.setdefault((metric.key, reading), ([], []))
                    questions.append(_question(metric, x, y, divide, blocked))
                    slots.append(line)
            else:
                line.verdict = Verdict("shown, not judged")
    raw_verdicts = {}
    for (key, reading), (questions, slots) in families.items():
        for line, verdict in zip(slots, judge(questions, band)):
            if reading == "raw":
                raw_verdicts[id(line)] = verdict
            else:
                line.verdict = verdict
    for line in lines:
        if id(line) in raw_verdicts:
            line.verdict = both_readings(line.verdict, raw_verdicts[id(line)])
            line.regression = line.verdict.worse
    return {"lines": lines, "shift": shift, "machine": machine_ratio(a, b), "band": band, "matched": len(keys),
            "only_a": [label(k) for k in ca if k not in cb], "only_b": [label(k) for k in cb if k not in ca],
            "regressions": [x for x in lines if x.regression]}


def contents(name: str, results: dict) -> str:
    """"a.json has cnn, mlp on numpy, torch (batch 64, cpu, float32)": what a run's cells could be matched on."""
    cells = results["cells"]
    if not cells:
        return f"{name} has no cells"
    def values(key: str) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(c.get(key) for c in cells))
    return (f"{name} has {values('model')} on {values('backend')} (batch {values('batch_size')}, "
            f"{values('device')}, {values('dtype')})")


def nothing_in_common(name_a: str, a: dict, name_b: str, b: dict) -> str:
    """The one-line reason two runs cannot be compared: no cell of one matches a cell of the other."""
    return (f"nothing to compare: {contents(name_a, a)}; {contents(name_b, b)}; --compare matches cells by backend, "
            "model, batch size, device and dtype, so compare two runs of the same suite")


def both_readings(adjusted: Verdict, raw: Verdict) -> Verdict:
    """Faster or slower only when the runs say so both as measured and after removing the machine's shift."""
    # Removing a shift assumes the machine slowed every cell alike; it did not (the mlp's small steps moved
    # less than the cnn's in the A/A runs), so a change that only the adjustment shows may be its artefact.
    if adjusted.word not in (FASTER, SLOWER) or raw.word == adjusted.word:
        return adjusted
    return Verdict(NO_DIFFERENCE, adjusted.ratio, adjusted.ci, adjusted.p, adjusted.p_holm, adjusted.test,
                   why=f"{adjusted.word} only after removing the common shift; {raw.word} as measured")


def _question(metric: Metric, x: dict, y: dict, adjust: float, blocked: str | None) -> Question:
    return Question(runs_of(x, metric.key), [v / adjust for v in runs_of(y, metric.key)],
                    lower_is_better=metric.better != "higher", words=metric.words, blocked=blocked)


def _ratio(r: float | None) -> str:
    return fmt.DASH if r is None else f"{r:.3f}x"

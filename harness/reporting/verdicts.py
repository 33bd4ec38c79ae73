"""Verdicts that noise cannot fake: a rank test per comparison, Holm over the family, and a minimum effect."""
from __future__ import annotations

from dataclasses import dataclass

from fwbench.harness import stats

# The smallest change that counts, as a ratio beyond 1. In ten A/A comparisons of quick suites on the shared
# 2-core reference machine a cell's median step time moved by a median 7.7% after removing the machine's
# common shift (docs/results.md); changes below that are not worth a verdict there.
NOISE_BAND = 0.10
ALPHA = 0.05         # family-wise error rate over every comparison of one table or one --compare
# A side whose run-to-run spread exceeds this has no meaningful median: no verdict. Spreads of 10-25% were
# common on the shared 2-core reference machine; the test itself accounts for those.
UNSTABLE = 0.25
MIN_RUNS = 3
FASTER, SLOWER, WITHIN, NO_DIFFERENCE, NONE = ("faster", "slower", "within noise", "no significant difference",
                                              "no verdict")


@dataclass
class Question:
    """Is b different from a? Per-process figures of each side, and the words for better and worse."""
    a: list[float]
    b: list[float]
    lower_is_better: bool = True
    words: tuple[str, str] = (FASTER, SLOWER)
    blocked: str | None = None  # known up front: contended, failed


@dataclass
class Verdict:
    word: str
    ratio: float | None = None              # median(b) / median(a)
    ci: tuple[float, float] | None = None   # 95% bootstrap interval of the ratio
    p: float | None = None
    p_holm: float | None = None
    test: str | None = None                 # "Mann-Whitney" or "Welch on logs"
    why: str = ""
    worse: bool = False

    def text(self) -> str:
        """"0.74x [0.72, 0.77] faster" or "no verdict (too few runs)"."""
        if self.ratio is None:
            return f"{self.word} ({self.why})" if self.why else self.word
        ci = f" [{self.ci[0]:.2f}, {self.ci[1]:.2f}]" if self.ci else ""
        return f"{self.ratio:.2f}x{ci} {self.word}" + (f" ({self.why})" if self.why else "")


def judge(questions: list[Question], band: float = NOISE_BAND, alpha: float = ALPHA) -> list[Verdict]:
    """One verdict per question; the p-values are Holm-corrected over every question that gets a test."""
    out = [_precheck(q) for q in questions]
    tested = [i for i, v in enumerate(out) if v is None]
    m = len(tested)
    for i in tested:
        q = questions[i]
        ratio = stats.median(q.b) / stats.median(q.a)
        # An exact rank test on n and m runs cannot go below 2 / C(n+m, n); when that is above the Holm
        # level, only a test on the values themselves can tell anything (named in the verdict).
        rank_can = stats.min_rank_p(len(q.a), len(q.b)) <= alpha / m
        test = "Mann-Whitney" if rank_can else "Welch on logs"
        p = stats.mann_whitney(q.a, q.b) if rank_can else stats.welch_log(q.a, q.b)
        out[i] = Verdict("", ratio, stats.ratio_ci(q.a, q.b), p, None, test)
    for i, adjusted in zip(tested, stats.holm([out[i].p for i in tested])):
        out[i].p_holm = adjusted
        _decide(out[i], questions[i], band, alpha)
    return out


def _precheck(q: Question) -> Verdict | None:
    """A verdict without a test (blocked, too few runs, unstable), or None when the question can be tested."""
    if q.blocked:
        return Verdict(NONE, why=q.blocked)
    if min(len(q.a), len(q.b)) < MIN_RUNS:
        return Verdict(NONE, why=f"too few runs: {len(q.a)} and {len(q.b)}, {MIN_RUNS} needed a side")
    wobbly = [s for s in (stats.spread(q.a), stats.spread(q.b)) if s is not None and s > UNSTABLE]
    if wobbly:
        return Verdict(NONE, why=f"unstable: run-to-run spread {100 * max(wobbly):.0f}% > {100 * UNSTABLE:.0f}%")
    return None


def _decide(v: Verdict, q: Question, band: float, alpha: float) -> None:
    beyond = v.ratio > 1 + band or v.ratio < 1 / (1 + band)
    inside = v.ci is not None and v.ci[0] >= 1 / (1 + band) and v.ci[1] <= 1 + band
    if v.p_holm < alpha and beyond:
        better = (v.ratio < 1) == q.lower_is_better
        v.word, v.worse = q.words[0] if better else q.words[1], not better
    elif v.p_holm < alpha or inside:
        v.word = WITHIN
    else:
        v.word = NO_DIFFERENCE

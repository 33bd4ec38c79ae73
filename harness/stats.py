"""Statistics over per-process figures: medians with bootstrap intervals, spreads, rank tests and Holm's correction."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP = 2000
SEED = 20261202  # fixed, so the same figures always give the same interval


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the median; None with fewer than 3 values, where it means nothing."""
    x = np.asarray(values, dtype=float)
    if len(x) < 3:
        return None
    rng = np.random.default_rng(SEED)
    meds = np.median(x[rng.integers(0, len(x), (BOOTSTRAP, len(x)))], axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(meds, [tail, 100 - tail])
    return float(low), float(high)


def ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Bootstrap interval of median(b) / median(a), each side resampled on its own; None below 3 values a side."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 3 or len(xb) < 3:
        return None
    rng = np.random.default_rng(SEED)
    ma = np.median(xa[rng.integers(0, len(xa), (BOOTSTRAP, len(xa)))], axis=1)
    mb = np.median(xb[rng.integers(0, len(xb), (BOOTSTRAP, len(xb)))], axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(mb / ma, [tail, 100 - tail])
    return float(low), float(high)


def spread(values: Sequence[float]) -> float | None:
    """Run-to-run spread: the scaled median absolute deviation over the median (a robust coefficient of variation)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    mid = np.median(x)
    return float(1.4826 * np.median(np.abs(x - mid)) / mid) if mid else None


def min_rank_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney test can give with these sample sizes."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value, exact where scipy can be (small samples without ties)."""
    from scipy.stats import mannwhitneyu  # scipy is a heavy import; only comparisons need it
    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided", method="auto").pvalue)


def welch_log(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value on the logarithms (ratios of times are what varies)."""
    from scipy.stats import ttest_ind
    la, lb = np.log(np.asarray(a, dtype=float)), np.log(np.asarray(b, dtype=float))
    if np.ptp(la) == 0 and np.ptp(lb) == 0:
        return 1.0 if la[0] == lb[0] else 0.0
    return float(ttest_ind(la, lb, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (family-wise error over all of them)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted

"""Statistics and verdicts: intervals over runs, Holm's correction, and verdicts that noise cannot fake."""

import numpy as np
import pytest

from fwbench.harness import stats
from fwbench.harness.reporting.verdicts import (FASTER, NO_DIFFERENCE, NONE, SLOWER, WITHIN, Question, judge)


def runs(centre: float, n: int = 5, spread: float = 0.01, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(centre * (1 + spread * rng.standard_normal(n)))


def test_median_interval_covers_the_median_and_needs_three_values():
    values = [10.0, 10.2, 9.9, 10.1, 10.05]
    low, high = stats.median_ci(values)
    assert low <= stats.median(values) <= high and 9.9 <= low and high <= 10.2
    assert stats.median_ci([1.0, 2.0]) is None
    assert stats.median_ci(values) == stats.median_ci(values)  # seeded: the same figures, the same interval


def test_spread_is_a_robust_relative_deviation():
    assert stats.spread([10, 10, 10]) == 0
    assert stats.spread([10, 11, 9, 10, 100]) == pytest.approx(1.4826 * 1 / 10)  # one wild run barely moves it
    assert stats.spread([5.0]) is None


def test_holm_matches_the_textbook_example():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    assert stats.holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])


def test_smallest_rank_p_is_two_over_the_arrangements():
    assert stats.min_rank_p(5, 5) == pytest.approx(2 / 252)
    assert stats.mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)


def test_identical_runs_are_within_noise_and_a_clear_slowdown_is_slower():
    a = runs(5.0)
    same, slow, fast = judge([Question(a, runs(5.0, seed=1)), Question(a, runs(6.25, seed=2)),
                              Question(a, runs(4.0, seed=3))])
    assert same.word in (WITHIN, NO_DIFFERENCE) and not same.worse
    assert slow.word == SLOWER and slow.worse and slow.ratio == pytest.approx(1.25, rel=0.03)
    assert slow.ci[0] < slow.ratio < slow.ci[1] and slow.p_holm < 0.05
    assert fast.word == FASTER and not fast.worse
    assert slow.text().startswith("1.2") and slow.text().endswith("slower")


def test_a_small_significant_change_is_within_noise_not_slower():
    a = [5.00, 5.01, 5.02, 5.00, 5.01, 5.02, 5.01]
    b = [x * 1.02 for x in a]  # perfectly separated, but 2% is inside the 5% band
    (v,) = judge([Question(a, b)])
    assert v.word == WITHIN and v.p_holm < 0.05


def test_the_rank_test_is_used_when_it_can_reach_the_holm_level_else_welch():
    a, b = runs(5.0, 6), runs(7.0, 6, seed=1)
    (v,) = judge([Question(a, b)])
    assert v.test == "Mann-Whitney"
    # ten comparisons of 5 runs a side: 2/252 > 0.05/10, so no rank test could ever reject
    many = judge([Question(runs(5.0, seed=i), runs(5.0 * (1.3 if i == 0 else 1), seed=50 + i)) for i in range(10)])
    assert all(v.test == "Welch on logs" for v in many)
    assert many[0].word == SLOWER and all(v.word != SLOWER for v in many[1:])


def test_no_verdict_for_too_few_runs_unstable_runs_or_a_blocked_question():
    few, wobbly, blocked = judge([Question([5.0, 5.1], [6.0, 6.1]),
                                  Question(runs(5.0), runs(5.0, spread=0.6, seed=1)),
                                  Question(runs(5.0), runs(8.0), blocked="contended")])
    assert few.word == NONE and "too few runs" in few.why
    assert wobbly.word == NONE and "unstable" in wobbly.why
    assert blocked.word == NONE and blocked.text() == "no verdict (contended)"


def test_higher_is_better_flips_the_words():
    (v,) = judge([Question(runs(100.0), runs(70.0, seed=1), lower_is_better=False, words=("higher", "lower"))])
    assert v.word == "lower" and v.worse


def test_aa_noise_gives_no_false_verdicts():
    """200 A/A families of 8 cells, 5 runs a side, 2% run-to-run spread: no cell is ever called slower or faster."""
    rng = np.random.default_rng(7)
    false = 0
    for _ in range(200):
        qs = [Question(list(5 * np.exp(0.02 * rng.standard_normal(5))), list(5 * np.exp(0.02 * rng.standard_normal(5))))
              for _ in range(8)]
        false += sum(v.word in (FASTER, SLOWER) for v in judge(qs))
    assert false == 0

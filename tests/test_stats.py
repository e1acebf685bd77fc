"""nas_meta.stats against small hand computations, its edge cases, and the calibration of the paired test."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from nas_meta.stats import (
    Difference,
    blocked_differences,
    bootstrap_ci,
    kendall_tau,
    mean_ci,
    paired_difference,
    spearman_rho,
    top_recall,
    wilcoxon_p,
)


def test_paired_difference_of_four_pairs_by_hand() -> None:
    # Differences 2, 3, 2, 4: mean 2.75, squared deviations 0.5625 + 0.0625 + 0.5625 + 1.5625 = 2.75,
    # sample sd sqrt(2.75 / 3), standard error sd / 2, t = 2.75 / se on 3 degrees of freedom.
    a, b = [3.0, 5.0, 4.0, 8.0], [1.0, 2.0, 2.0, 4.0]
    se = math.sqrt(2.75 / 3) / 2
    t = 2.75 / se
    half = scipy_stats.t.ppf(0.975, 3) * se
    d = paired_difference(a, b)
    assert d.n == 4
    assert d.mean == pytest.approx(2.75)
    assert d.ci95 == pytest.approx(half)
    assert half == pytest.approx(1.5234, abs=1e-4)  # t_{0.975, 3} = 3.1824
    assert d.pvalue == pytest.approx(2 * scipy_stats.t.sf(t, 3))
    assert (d.low, d.high) == (pytest.approx(2.75 - half), pytest.approx(2.75 + half))
    assert d.ahead() and not d.behind()
    flipped = paired_difference(b, a)
    assert flipped.mean == pytest.approx(-2.75) and flipped.ci95 == pytest.approx(half)
    assert flipped.behind() and not flipped.ahead()
    assert flipped.pvalue == pytest.approx(d.pvalue)


def test_paired_difference_inside_its_interval_calls_nothing() -> None:
    # Differences 0.04, 0.01, 0.05, 0.01: mean 0.0275, sd sqrt(0.001275 / 3), interval
    # 0.0275 +- 3.1824 x sd / 2 = 0.0275 +- 0.0328 straddles zero.
    d = paired_difference([0.80, 0.75, 0.78, 0.70], [0.76, 0.74, 0.73, 0.69])
    assert d.mean == pytest.approx(0.0275)
    assert d.ci95 == pytest.approx(scipy_stats.t.ppf(0.975, 3) * math.sqrt(0.001275 / 3) / 2)
    assert d.low < 0 < d.high
    assert not d.ahead() and not d.behind()


def test_paired_difference_edge_cases() -> None:
    one = paired_difference([0.7], [0.5])
    assert one.mean == pytest.approx(0.2) and one.ci95 == math.inf and math.isnan(one.pvalue) and one.n == 1
    assert not one.ahead() and not one.behind()  # one block cannot tell training noise from a difference
    none = paired_difference([], [])
    assert none.n == 0 and math.isnan(none.mean) and not none.ahead() and not none.behind()
    assert paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == Difference(0.0, 0.0, 1.0, 3)
    same = paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert same == Difference(1.0, 0.0, 0.0, 3) and same.ahead()
    with pytest.raises(ValueError, match="3 and 2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        paired_difference([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])


def test_mean_ci_by_hand() -> None:
    # mean 0.75; population variance (0.0225 + 0.0025 + 0.0625 + 0.0225) / 4 = 0.0275.
    mean, ci = mean_ci([0.6, 0.8, 1.0, 0.6])
    assert mean == pytest.approx(0.75)
    assert ci == pytest.approx(1.96 * math.sqrt(0.0275) / 2)
    assert mean_ci([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])


def test_kendall_tau_with_ties_on_both_sides_by_hand() -> None:
    # (1,1) (1,2) (2,2) (3,3): 4 concordant pairs, one tied in x only, one tied in y only:
    # tau-b = 4 / sqrt((4 + 1) * (4 + 1)).
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # (1,2) (2,1) (3,3) (3,4): 4 concordant, 1 discordant, one tied in x only: 3 / sqrt(6 * 5).
    assert kendall_tau([1, 2, 3, 3], [2, 1, 3, 4]) == pytest.approx(3 / math.sqrt(30))
    assert kendall_tau([1, 2, math.inf, 3, 4], [1, 2, 0, 3, 4]) == pytest.approx(1.0)  # inf drops its pair
    assert kendall_tau([1, 5, 2, 3], [1, math.nan, 2, 3]) == pytest.approx(1.0)  # on either side
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant estimator is a result: NaN, and no warning
        assert math.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))
    assert math.isnan(kendall_tau([1, math.nan], [1, 2]))  # one pair left


def test_spearman_rho_with_ties_on_both_sides_by_hand() -> None:
    # Average ranks x: 1.5, 1.5, 3, 4; y: 1, 2.5, 2.5, 4.  Centred: (-1, -1, 0.5, 1.5) and
    # (-1.5, 0, 0, 1.5): sum xy = 3.75, sum x^2 = sum y^2 = 4.5 -> rho = 3.75 / 4.5.
    assert spearman_rho([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5)
    assert spearman_rho([1, 2], [2, 1]) == pytest.approx(-1.0)
    assert spearman_rho([1, math.nan, 2, 3], [3, 0, 2, 1]) == pytest.approx(-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(spearman_rho([4, 4, 4], [1, 2, 3]))
        assert math.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))
    assert math.isnan(spearman_rho([1], [1]))


def test_top_recall_by_hand() -> None:
    # Top half of the reference: indices 0 and 1; of the estimate: 0 and 2.
    assert top_recall([9, 1, 8, 0], [9, 8, 1, 0], fraction=0.5) == 0.5
    assert top_recall([9, 8, 1, 0], [9, 8, 1, 0], fraction=0.5) == 1.0
    assert top_recall([math.nan, 1, 2], [5, 1, 2], fraction=0.5) == 1.0  # the nan's pair is dropped
    # Half of 5 rounds up to 3: the reference's top is indices 0, 1, 2, the estimate's 0, 1, 4.
    assert top_recall([5, 4, 1, 2, 3], [5, 4, 3, 2, 1], fraction=0.5) == pytest.approx(2 / 3)
    assert math.isnan(top_recall([math.nan], [1.0]))


def test_bootstrap_ci_resamples_pairs_as_by_hand() -> None:
    # The same index draws scipy makes (one row of pair indices per resample), percentiles by hand.
    x = [0.3, 1.2, 2.5, 2.9]
    y = [1.0, 0.4, 3.3, 2.0]
    a, b = np.array(x), np.array(y)
    rows = np.random.default_rng(5).integers(0, len(x), (300, len(x)))
    values = np.array([kendall_tau(a[i], b[i]) for i in rows])
    values = values[np.isfinite(values)]  # resamples that repeat one architecture rank nothing
    assert 0 < len(values) < 300  # both kinds occur, so the dropping is exercised
    low, high = np.percentile(values, [2.5, 97.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined resample is expected here, not a warning
        assert bootstrap_ci(kendall_tau, x, y, resamples=300, seed=5) == (pytest.approx(low), pytest.approx(high))
    # With every resample defined this is scipy's own percentile interval.
    diff = lambda u, v: float(np.mean(u - v))  # noqa: E731
    means = np.array([diff(a[i], b[i]) for i in rows])
    assert bootstrap_ci(diff, x, y, resamples=300, seed=5) == (
        pytest.approx(np.percentile(means, 2.5)),
        pytest.approx(np.percentile(means, 97.5)),
    )


def test_bootstrap_ci_edge_cases() -> None:
    x = list(range(30))
    assert bootstrap_ci(kendall_tau, x, x, resamples=200) == (1.0, 1.0)  # degenerate: the one value
    assert bootstrap_ci(spearman_rho, x, [-v for v in x], resamples=200) == (-1.0, -1.0)
    nan2 = bootstrap_ci(kendall_tau, [1, 2, math.nan], [1, 2, 3])  # two finite pairs
    assert math.isnan(nan2[0]) and math.isnan(nan2[1])
    constant = bootstrap_ci(kendall_tau, [1, 1, 1, 1], [1, 2, 3, 4], resamples=50)
    assert math.isnan(constant[0]) and math.isnan(constant[1])
    assert bootstrap_ci(kendall_tau, x, x[::-1], resamples=100, seed=3) == bootstrap_ci(
        kendall_tau, x, x[::-1], resamples=100, seed=3
    )


def test_wilcoxon_p_by_hand() -> None:
    # Differences 2, 3, -1, 4, 5: ranks of |d| 2, 3, 1, 4, 5, so W- = 1.  Of the 2^5 equally likely
    # sign patterns, W- <= 1 in two ({} and {1}): two-sided p = 2 x 2 / 32.
    assert wilcoxon_p([2, 3, -1, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx(0.125)
    assert wilcoxon_p([3, 4, 5, 6, 7], [1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    # Differences 0, 2, -2, 3 (a zero and a tie): ranks 1, 2.5, 2.5, 4 and the zero's rank split,
    # so W+ = 0.5 + 2.5 + 4 = 7.  Flipping the signs of 2.5, 2.5, 4 gives W+ in {0.5, 3, 3, 4.5,
    # 5.5, 7, 7, 9.5}: P(W+ >= 7) = 3/8, two-sided 3/4.
    assert wilcoxon_p([1, 2, 3, 4], [1, 0, 5, 1]) == pytest.approx(0.75)
    assert wilcoxon_p([1, 0, 5, 1], [1, 2, 3, 4]) == pytest.approx(0.75)
    # Differences 0, -4, 1, 2, 3: ranks 1..5, the zero's split, so W+ = 0.5 + 2 + 3 + 4.  Sums of
    # the positive ranks over the 16 sign patterns of {2, 3, 4, 5}: 6 reach 9, 12 stay at or below
    # it, two-sided p = 2 x 6/16.  (Dropping the zero instead would rank 1..4 and give 2 x 7/16.)
    assert wilcoxon_p([0, -4, 1, 2, 3], [0, 0, 0, 0, 0]) == pytest.approx(0.75)
    assert wilcoxon_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == 1.0
    with pytest.raises(ValueError, match="2 and 3"):
        wilcoxon_p([1, 2], [1, 2, 3])


def test_block_level_test_is_calibrated_and_per_episode_intervals_are_not() -> None:
    """Two identical entrants raced on 3 blocks: the paired t interval over blocks calls a winner
    in about 5% of races; an interval over the pooled episodes ignores the training noise and
    calls far more."""
    rng = np.random.default_rng(20240607)
    races, blocks, episodes = 2000, 3, 40
    training = rng.normal(0, 0.02, (races, blocks, 1, 2))  # each entrant's own training of the block
    # Per-episode noise of sd 0.15 = sqrt(0.12^2 + 0.09^2): the episode's difficulty, shared by both
    # entrants (they answer the same episodes), plus each entrant's own luck on it.
    shared = rng.normal(0, 0.12, (races, blocks, episodes, 1))
    own = rng.normal(0, 0.09, (races, blocks, episodes, 2))
    scores = training + shared + own
    per_block = scores.mean(axis=2)
    block_calls = 0
    for r in range(races):
        d = paired_difference(per_block[r, :, 0], per_block[r, :, 1])
        block_calls += d.ahead() or d.behind()
    per_episode = (scores[..., 0] - scores[..., 1]).reshape(races, blocks * episodes)
    naive_calls = 0
    for r in range(races):
        mean, ci = mean_ci(per_episode[r])
        naive_calls += abs(mean) > ci
    assert 0.02 <= block_calls / races <= 0.08
    assert naive_calls / races > 0.15


def test_blocked_differences_by_hand() -> None:
    # Rows a, b, c over blocks 1, 2: row means 0.75, 0.55, 0.7; block means 0.7, 1.9/3; grand 2/3.
    # Residuals (score - row mean - block mean + grand): a and b +-1/60, c -+1/30.
    # SSE = 4/3600 + 2/900 = 1/300 on (3-1)(2-1) = 2 degrees of freedom: MSE 1/600.
    d = blocked_differences({"a": [0.8, 0.7], "b": [0.6, 0.5], "c": [0.7, 0.7]}, "b")
    se = math.sqrt(2 * (1 / 600) / 2)
    assert d["a"].mean == pytest.approx(0.2) and d["c"].mean == pytest.approx(0.15)
    assert d["a"].ci95 == pytest.approx(scipy_stats.t.ppf(0.975, 2) * se)
    assert d["a"].pvalue == pytest.approx(2 * scipy_stats.t.sf(0.2 / se, 2))
    assert d["b"] == Difference(0.0, 0.0, 1.0, 2)
    assert d["a"].ahead() and not d["c"].behind()


def test_blocked_differences_of_two_rows_is_the_paired_t_test() -> None:
    a, b = [0.81, 0.74, 0.79, 0.70], [0.78, 0.75, 0.72, 0.69]
    pooled, paired = blocked_differences({"a": a, "b": b}, "b")["a"], paired_difference(a, b)
    assert pooled.mean == pytest.approx(paired.mean)
    assert pooled.ci95 == pytest.approx(paired.ci95) and pooled.pvalue == pytest.approx(paired.pvalue)


def test_blocked_differences_edge_cases() -> None:
    one = blocked_differences({"a": [0.8], "b": [0.6]}, "b")  # one block: no noise estimate
    assert one["a"].mean == pytest.approx(0.2) and one["a"].ci95 == math.inf and math.isnan(one["a"].pvalue)
    with pytest.raises(ValueError, match="unknown row"):
        blocked_differences({"a": [0.8, 0.7]}, "z")
    with pytest.raises(ValueError, match="same number of blocks"):
        blocked_differences({"a": [0.8, 0.7], "b": [0.6]}, "b")
    with pytest.raises(ValueError, match="finite"):
        blocked_differences({"a": [0.8, math.nan], "b": [0.6, 0.5]}, "b")


def test_blocked_differences_with_three_rows_are_calibrated_over_two_blocks() -> None:
    """Three identical entrants, two blocks: the pooled test calls a difference between two given
    rows in about 5% of races, while having two degrees of freedom instead of one."""
    rng = np.random.default_rng(7)
    races = 4000
    scores = rng.normal(0.7, 0.02, (races, 3, 2)) + rng.normal(0, 0.03, (races, 1, 2))  # block effect shared
    calls = 0
    for r in range(races):
        d = blocked_differences({"a": scores[r, 0], "b": scores[r, 1], "c": scores[r, 2]}, "b")["a"]
        calls += d.ahead() or d.behind()
    assert 0.03 <= calls / races <= 0.07

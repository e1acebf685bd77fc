"""The statistics every comparison in the toolkit uses, in one place (numpy and scipy only).

Two kinds of question come up.  *Is a ahead of b?*  Two entrants scored on the same blocks (a
training seed each, scored on the same episodes) differ by a paired amount: ``paired_difference``
gives the Student-t interval over the blocks, ``wilcoxon_p`` a rank test of the same pairs, and
``mean_ci`` the few-shot papers' interval over test episodes, which describes one trained model
and says nothing about the training's own noise.  *Does a cheap score rank like the reference?*
``kendall_tau``, ``spearman_rho`` and ``top_recall`` over architectures, with ``bootstrap_ci``
resampling the architectures.

    >>> d = paired_difference([0.71, 0.74, 0.70], [0.69, 0.70, 0.69])
    >>> round(d.mean, 4), d.n, d.ahead(), d.behind()
    (0.0233, 3, False, False)
    >>> mean_ci([1.0, 0.0, 1.0, 0.0])
    (0.5, 0.49)
    >>> round(kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]), 6)
    0.666667
    >>> round(spearman_rho([1, 2, 3, 4], [10, 20, 40, 30]), 6)
    0.8
    >>> top_recall([4, 3, 2, 1], [4, 3, 1, 2], fraction=0.5)
    1.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy

__all__ = [
    "Difference",
    "paired_difference",
    "mean_ci",
    "kendall_tau",
    "spearman_rho",
    "top_recall",
    "bootstrap_ci",
    "wilcoxon_p",
    "blocked_differences",
]


@dataclass(frozen=True)
class Difference:
    """Paired difference a - b over n pairs (blocks)."""

    mean: float
    ci95: float
    pvalue: float
    n: int

    @property
    def low(self) -> float:
        """Lower end of the 95% interval."""
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        """Upper end of the 95% interval."""
        return self.mean + self.ci95

    def behind(self) -> bool:
        """Whether the whole 95% interval lies below zero: a is behind b with confidence."""
        return self.high < 0

    def ahead(self) -> bool:
        """Whether the whole 95% interval lies above zero: a is ahead of b with confidence."""
        return self.low > 0


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"need two 1-D sequences, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"paired sequences differ in length: {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        # Dropping a pair silently would change which blocks are compared; the caller must decide.
        raise ValueError("paired values must be finite: a diverged or missing block has no difference")
    return x, y


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """The mean of a_i - b_i with its two-sided 95% Student-t half-width and p (scipy.stats.ttest_rel).

    One pair per block (a seed's training, scored on episodes both sides share): the blocks are the
    independent units, so the interval covers the training noise that a per-episode interval misses.
    Fewer than two pairs: half-width ``inf`` and p NaN (no pairs: the mean is NaN as well).  All
    differences equal: half-width 0 and p 1 when they are 0, else 0.  Unequal lengths, an input that
    is not 1-D, or a non-finite value raise ValueError.
    """
    x, y = _paired_arrays(a, b)
    n = len(x)
    if n == 0:
        return Difference(math.nan, math.inf, math.nan, 0)
    diff = x - y
    mean = float(diff.mean())
    if n < 2:
        return Difference(mean, math.inf, math.nan, n)
    if np.all(diff == diff[0]):
        # ttest_rel divides by a zero standard deviation here; the limit is a certain difference.
        return Difference(float(diff[0]), 0.0, 1.0 if diff[0] == 0 else 0.0, n)
    result = _scipy.ttest_rel(x, y)
    interval = result.confidence_interval(confidence_level=0.95)
    return Difference(mean, float(interval.high - interval.low) / 2, float(result.pvalue), n)


def blocked_differences(table: Mapping[str, Sequence[float]], against: str) -> dict[str, Difference]:
    """Each row's difference to row ``against`` in a randomized complete block design: ``table``
    maps a treatment to its score in each of the same B blocks (a race: an entrant's mean over the
    block's episodes, each block one training seed of every entrant).

    The noise is estimated once for all rows, from the residuals of the additive model
    score = row effect + block effect (mean square with (rows - 1)(B - 1) degrees of freedom), and
    each difference gets the Student-t interval of a difference of two row means,
    t * sqrt(2 * MSE / B): with two rows this is exactly the paired t-test (:func:`paired_difference`);
    with more rows the shared noise estimate has more degrees of freedom, so a race of three
    entrants over two blocks is not left with one.  It assumes one noise level for every row.
    Rows of unequal length, or a non-finite value, raise ValueError.

        >>> d = blocked_differences({"a": [0.8, 0.7], "b": [0.6, 0.5], "c": [0.7, 0.7]}, "b")
        >>> round(d["a"].mean, 6), d["a"].n
        (0.2, 2)
    """
    names = list(table)
    if against not in table:
        raise ValueError(f"unknown row {against!r}; rows: {names}")
    if len({len(table[name]) for name in names}) != 1:
        raise ValueError(f"every row needs the same number of blocks, got {[len(table[n]) for n in names]}")
    scores = np.asarray([np.asarray(table[name], dtype=float) for name in names])  # (rows, B)
    if not np.isfinite(scores).all():
        raise ValueError("block scores must be finite")
    rows, blocks = scores.shape
    means = scores.mean(axis=1)
    ref = means[names.index(against)]
    df = (rows - 1) * (blocks - 1)
    out: dict[str, Difference] = {}
    if df == 0:
        return {
            name: Difference(float(m - ref), math.inf, math.nan, blocks) for name, m in zip(names, means, strict=True)
        }
    residuals = scores - means[:, None] - scores.mean(axis=0)[None, :] + scores.mean()
    mse = float((residuals**2).sum()) / df
    se = math.sqrt(2 * mse / blocks)
    quantile = float(_scipy.t.ppf(0.975, df))
    for name, m in zip(names, means, strict=True):
        diff = float(m - ref)
        if name == against:
            out[name] = Difference(0.0, 0.0, 1.0, blocks)
        elif se == 0:
            out[name] = Difference(diff, 0.0, 1.0 if diff == 0 else 0.0, blocks)
        else:
            p = float(2 * _scipy.t.sf(abs(diff) / se, df))
            out[name] = Difference(diff, quantile * se, p, blocks)
    return out


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 1.96 x population standard deviation / sqrt(n)): the 95% interval over test episodes
    that few-shot papers report.  ValueError when ``values`` is empty."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"need a non-empty 1-D sequence, got shape {v.shape}")
    return float(v.mean()), float(1.96 * v.std() / math.sqrt(len(v)))


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equal-length 1-D sequences, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _rankable(a: np.ndarray, b: np.ndarray) -> bool:
    # scipy's spearmanr warns on a constant side; an estimator that scores every architecture
    # alike ranks nothing, which is a result (NaN), not a problem to warn about.
    return len(a) >= 2 and bool(np.any(a != a[0])) and bool(np.any(b != b[0]))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau); pairs with a non-finite value are dropped; NaN
    when fewer than two remain or one side is constant."""
    a, b = _finite_pairs(x, y)
    if not _rankable(a, b):
        return math.nan
    return float(_scipy.kendalltau(a, b).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (scipy.stats.spearmanr: Pearson's correlation of the average ranks); pairs
    with a non-finite value are dropped; NaN when fewer than two remain or one side is constant."""
    a, b = _finite_pairs(x, y)
    if not _rankable(a, b):
        return math.nan
    return float(_scipy.spearmanr(a, b).statistic)


def top_recall(estimate: Sequence[float], reference: Sequence[float], *, fraction: float = 0.1) -> float:
    """Of the reference's top ``fraction`` (at least one), the share the estimate also puts in its top
    ``fraction``; higher is better on both sides."""
    a, b = _finite_pairs(estimate, reference)
    if len(a) == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(a)))
    top_est = set(np.argsort(-a, kind="mergesort")[:k].tolist())
    top_ref = set(np.argsort(-b, kind="mergesort")[:k].tolist())
    return len(top_est & top_ref) / k


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    x: Sequence[float],
    y: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic(x, y)`` with the pairs (architectures) resampled
    (scipy.stats.bootstrap, paired, seeded by ``seed``).

    Pairs with a non-finite value are dropped first; fewer than three left give (NaN, NaN).  A
    resample on which the statistic is undefined (a rank correlation of a resample that repeats one
    architecture) is left out of the percentiles; none defined gives (NaN, NaN).  When every
    resample gives the same value v (up to rounding) the interval is (v, v).
    """
    a, b = _finite_pairs(x, y)
    if len(a) < 3:
        return math.nan, math.nan

    def pair_statistic(u: np.ndarray, v: np.ndarray) -> float:
        return float(statistic(u, v))

    with warnings.catch_warnings():
        # An undefined resample makes scipy's quantiles NaN (and warn); they are recomputed below.
        warnings.simplefilter("ignore", _scipy.DegenerateDataWarning)
        result = _scipy.bootstrap(
            (a, b),
            pair_statistic,
            n_resamples=resamples,
            paired=True,
            vectorized=False,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    values = np.asarray(result.bootstrap_distribution, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    if np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())):
        # A degenerate distribution whose resamples differ only by rounding (scipy's tau of a
        # perfect ranking is 1 or 1 - 1 ulp): its interval is the one value, not two ulps apart.
        theta = float(statistic(a, b))
        v = theta if abs(theta - values[0]) <= 1e-12 * max(1.0, abs(theta)) else float(values[0])
        return v, v
    if len(values) < len(result.bootstrap_distribution):
        low, high = np.percentile(values, [2.5, 97.5])  # the linear quantiles scipy uses
        return float(low), float(high)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of a_i - b_i (scipy.stats.wilcoxon, zero
    differences split between the signs); 1.0 when every difference is 0, NaN with no pairs.
    Unequal lengths, an input that is not 1-D, or a non-finite value raise ValueError."""
    x, y = _paired_arrays(a, b)
    if len(x) == 0:
        return math.nan
    if np.all(x == y):
        return 1.0
    return float(_scipy.wilcoxon(x, y, zero_method="zsplit", alternative="two-sided").pvalue)

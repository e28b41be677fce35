"""Statistics on cross-validated scores: intervals and paired tests that account for the overlap of
the training sets of K-fold resampling.

The K scores of K-fold cross-validation are not independent (any two training sets share most of
their images), so the plain standard error and paired t-test on them are far too confident
(Dietterich 1998; Bouckaert & Frank 2004). Nadeau & Bengio (2003) correct the variance of the mean
of J resampled scores from ``s²/J`` to ``(1/J + n_test/n_train) · s²``; the corrected resampled
t-test uses it with J − 1 degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats


def corrected_variance_factor(n: int, test_train_ratio: float) -> float:
    """Nadeau–Bengio's factor on ``s²`` for the variance of the mean of ``n`` resampled scores."""
    return 1.0 / n + test_train_ratio


def corrected_interval(scores: Sequence[float], test_train_ratio: float, confidence: float = 0.95) -> tuple[float, float]:
    """The ``confidence`` interval of the mean score, with the corrected variance; (mean, mean) for
    one score or no spread."""
    values = np.asarray(scores, dtype="float64")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean
    spread = math.sqrt(corrected_variance_factor(len(values), test_train_ratio) * values.var(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * spread
    return mean - half, mean + half


def corrected_paired_test(a: Sequence[float], b: Sequence[float], test_train_ratio: float) -> tuple[float, float]:
    """The corrected resampled t-test of ``a`` against ``b`` (scores on the same folds, in the same
    order): ``(t, two-sided p)``. Identical scores give (0, 1)."""
    diff = np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64")
    if len(diff) < 2:
        return 0.0, 1.0
    variance = diff.var(ddof=1)
    if variance == 0:
        return (0.0, 1.0) if diff.mean() == 0 else (math.copysign(math.inf, diff.mean()), 0.0)
    t = float(diff.mean() / math.sqrt(corrected_variance_factor(len(diff), test_train_ratio) * variance))
    return t, float(2 * scipy_stats.t.sf(abs(t), len(diff) - 1))


def plain_paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The uncorrected paired t-test, for comparison only: too confident on K-fold scores."""
    diff = np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64")
    if len(diff) < 2 or diff.var(ddof=1) == 0:
        return corrected_paired_test(a, b, 0.0)
    t = float(diff.mean() / math.sqrt(diff.var(ddof=1) / len(diff)))
    return t, float(2 * scipy_stats.t.sf(abs(t), len(diff) - 1))


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a proportion: right for a test set of n images, each
    scored once and independently, however small n is."""
    if trials == 0:
        return math.nan, math.nan
    interval = scipy_stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="exact")
    return float(interval.low), float(interval.high)


def exact_mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> float:
    """The exact McNemar test of two models scored on the same images: the two-sided binomial p of
    the images only one of them got right (1 when they disagree on none)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)

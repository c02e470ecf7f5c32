"""Point estimates with confidence intervals for realised performance, and label-free estimates.

Realised (labels known): ROC AUC with DeLong's variance (fast midrank form, Sun & Xu 2014),
means (log loss, Brier, per-row profit) with the normal interval, precision and recall with
Wilson's score interval, ECE with a seeded bootstrap (it has no usable closed form).

Estimated (labels unknown, CBPE as in NannyML): if the probabilities are calibrated, row i
churns with probability p_i, so the expected confusion matrix at the decision is
TP = sum_{d} p, FP = sum_{d} (1 - p), FN = sum_{not d} p, TN = sum_{not d} (1 - p); and the
expected ROC curve, scanning rows by descending p, rises by p_i / sum(p) and runs right by
(1 - p_i) / sum(1 - p), whose area is the expected AUC. It is only as good as the
calibration, which is why performance.py checks it against cohorts whose labels matured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from churnops.core.metrics import log_loss, reliability_curve

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
_BOOTSTRAP_ROUNDS = 100


@dataclass(frozen=True)
class Estimate:
    """A value with its confidence interval (NaN bounds when there is none)."""

    value: float
    low: float = math.nan
    high: float = math.nan


def z_value(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def auc_delong(y: NDArray[np.int64], score: FloatArray) -> tuple[float, float]:
    """ROC AUC (ties count half) and DeLong's standard error; (NaN, NaN) with one class only."""
    positive = score[y == 1]
    negative = score[y == 0]
    m, n = positive.size, negative.size
    if m == 0 or n == 0:
        return math.nan, math.nan
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    rank_pos, rank_neg = ranks[:m], ranks[m:]
    auc = (rank_pos.sum() - m * (m + 1) / 2.0) / (m * n)
    v_pos = (rank_pos - stats.rankdata(positive)) / n
    v_neg = 1.0 - (rank_neg - stats.rankdata(negative)) / m
    variance = (np.var(v_pos, ddof=1) / m if m > 1 else 0.0) + (np.var(v_neg, ddof=1) / n if n > 1 else 0.0)
    return float(auc), float(math.sqrt(max(variance, 0.0)))


def auc_estimate(y: NDArray[np.int64], score: FloatArray, z: float) -> Estimate:
    auc, se = auc_delong(y, score)
    if math.isnan(auc):
        return Estimate(math.nan)
    return Estimate(auc, max(0.0, auc - z * se), min(1.0, auc + z * se))


def mean_estimate(values: FloatArray, z: float, scale: float = 1.0) -> Estimate:
    """Mean of `values` times `scale` (use scale = n for a sum) with the normal interval."""
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return Estimate(scale * mean, scale * (mean - z * se), scale * (mean + z * se))


def wilson(successes: int, trials: int, z: float) -> Estimate:
    """A proportion with Wilson's score interval; 0.0 (no interval) when there are no trials."""
    if trials == 0:
        return Estimate(0.0)
    share = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return Estimate(share, max(0.0, centre - half), min(1.0, centre + half))


def log_loss_rows(y: NDArray[np.int64], p: FloatArray) -> FloatArray:
    clipped = np.clip(p, 1e-15, 1.0 - 1e-15)
    return np.asarray(-(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)), dtype=np.float64)


def ece_estimate(y: NDArray[np.int64], p: FloatArray, n_bins: int, confidence: float) -> Estimate:
    """ECE (equal-width bins, as metrics.reliability_curve) with a seeded percentile bootstrap interval."""
    value = reliability_curve(y, p, n_bins).ece
    if y.size < 2:
        return Estimate(value)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], p, side="right")
    gap = p - y
    rng = np.random.default_rng(0)
    samples = np.empty(_BOOTSTRAP_ROUNDS)
    for round_ in range(_BOOTSTRAP_ROUNDS):
        pick = rng.integers(0, y.size, y.size)
        # sum over bins of |sum(p - y)| / n is the count-weighted mean |mean p - mean y|, i.e. ECE
        samples[round_] = np.abs(np.bincount(index[pick], weights=gap[pick], minlength=n_bins)).sum() / y.size
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Estimate(value, float(low), float(high))


def realised_log_loss(y: NDArray[np.int64], p: FloatArray, z: float) -> Estimate:
    rows = log_loss_rows(y, p)
    estimate = mean_estimate(rows, z)
    return Estimate(log_loss(y, p), estimate.low, estimate.high)


def expected_auc(p: FloatArray) -> float:
    """Expected ROC AUC if each row churns with its probability (CBPE); NaN when it cannot vary."""
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    positives, negatives = sorted_p.sum(), (1.0 - sorted_p).sum()
    if positives <= 0.0 or negatives <= 0.0:
        return math.nan
    tpr = np.concatenate([[0.0], np.cumsum(sorted_p) / positives])
    fpr = np.concatenate([[0.0], np.cumsum(1.0 - sorted_p) / negatives])
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def expected_ece(p: FloatArray, n_bins: int) -> float:
    """The ECE perfectly calibrated labels show by chance: per bin E|sum(y - p)| / n, taken as
    sqrt(2 / pi) x its standard deviation sqrt(sum p (1 - p)) (normal approximation)."""
    if p.size == 0:
        return math.nan
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], p, side="right")
    variance = np.bincount(index, weights=p * (1.0 - p), minlength=n_bins)
    return float(math.sqrt(2.0 / math.pi) * np.sqrt(variance).sum() / p.size)


def expected_confusion(p: FloatArray, decision: BoolArray) -> tuple[float, float, float, float]:
    """Expected (TP, FP, FN, TN) at the served decisions if the probabilities are calibrated."""
    contacted, passed = p[decision], p[~decision]
    return (
        float(contacted.sum()),
        float((1.0 - contacted).sum()),
        float(passed.sum()),
        float((1.0 - passed).sum()),
    )

"""ROC AUC with honest uncertainty: bootstrap and DeLong intervals for one scorer, and paired
comparisons of two scorers on the same rows (DeLong's test for correlated ROC curves and the
paired bootstrap).

The bootstrap reads every resample's AUC off one sort of the data: rows are laid out as
[non-churners by score, churners by score] with each churner's count of lower-scored
non-churners, so a resample's AUC is a cumulative sum of its row multiplicities and one gather,
O(rows) per resample with no sort. 2,000 resamples of 20,000 rows take about 0.3 s (0.4 s paired).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from churnops.core.metrics import FloatArray, check_scores
from churnops.core.performance_stats import auc_delong
from churnops.core.stats import (
    DEFAULT_RESAMPLES,
    Estimate,
    percentile_interval,
    resample_counts,
    z_value,
)


@dataclass(frozen=True)
class AucComparison:
    """AUC of scorer A minus scorer B on the same rows: difference, interval and two-sided p-value.

    `p_value` tests `difference == margin`; `better` is True when the whole interval lies above
    `margin`, i.e. A beats B by more than `margin` at the interval's confidence.
    """

    auc_a: float
    auc_b: float
    difference: float
    low: float
    high: float
    p_value: float
    margin: float
    confidence: float
    method: str
    n: int
    n_positive: int

    @property
    def better(self) -> bool:
        """A is better than B by more than `margin` (the interval excludes it)."""
        return self.low > self.margin

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "better": self.better}


# --- ROC AUC -----------------------------------------------------------------------------------


def roc_auc(y_true: ArrayLike, proba: ArrayLike) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN on one class."""
    y, p = check_scores(y_true, proba)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = sps.rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_bootstrap(
    y_true: ArrayLike,
    proba: ArrayLike,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """ROC AUC with its percentile-bootstrap interval over row resamples."""
    y, p = check_scores(y_true, proba)
    value = roc_auc(y, p)
    if math.isnan(value):
        return Estimate(math.nan, math.nan, math.nan, int(y.size), f"bootstrap({resamples})")
    layout = _AucLayout.of(y, p)
    rng = np.random.default_rng(seed)
    aucs = np.concatenate([layout.aucs(counts) for counts in resample_counts(rng, y.size, resamples)])
    low, high = percentile_interval(aucs, confidence)
    return Estimate(value, low, high, int(y.size), f"bootstrap({resamples})")


def auc_delong_interval(y_true: ArrayLike, proba: ArrayLike, confidence: float = 0.95) -> Estimate:
    """ROC AUC with DeLong's asymptotic interval (closed form; what the sequential AUC test uses)."""
    y, p = check_scores(y_true, proba)
    value, se = auc_delong(y, p)
    half = z_value(confidence) * se
    return Estimate(value, value - half, value + half, int(y.size), "delong")


def delong_auc_se(y_true: ArrayLike, proba: ArrayLike) -> tuple[float, float]:
    """(AUC, DeLong standard error) of one scorer, checked input; both NaN on one class.

    The computation is core.performance_stats.auc_delong's (one single-curve DeLong in core).
    """
    y, p = check_scores(y_true, proba)
    return auc_delong(y, p)


def delong_test(
    y_true: ArrayLike,
    proba_a: ArrayLike,
    proba_b: ArrayLike,
    confidence: float = 0.95,
    margin: float = 0.0,
) -> AucComparison:
    """DeLong's test for two correlated ROC curves scored on the same rows (fast midrank form,
    Sun & Xu 2014): AUC(A) - AUC(B), its normal interval and the two-sided p-value against `margin`."""
    y, pa = check_scores(y_true, proba_a)
    _, pb = check_scores(y_true, proba_b)
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        return _undefined_comparison(y, confidence, margin, "delong")
    aucs, v_pos, v_neg = _delong_components(y, np.vstack([pa, pb]))
    contrast = np.array([1.0, -1.0])
    variance = contrast @ _cov(v_pos) @ contrast / n_pos + contrast @ _cov(v_neg) @ contrast / (
        y.size - n_pos
    )
    se = math.sqrt(max(float(variance), 0.0))
    difference = float(aucs[0] - aucs[1])
    half = z_value(confidence) * se
    if se > 0:
        p_value = float(2 * sps.norm.sf(abs(difference - margin) / se))
    else:
        p_value = 1.0 if difference == margin else 0.0
    return AucComparison(
        float(aucs[0]),
        float(aucs[1]),
        difference,
        difference - half,
        difference + half,
        p_value,
        margin,
        confidence,
        "delong",
        int(y.size),
        n_pos,
    )


def paired_bootstrap_auc(
    y_true: ArrayLike,
    proba_a: ArrayLike,
    proba_b: ArrayLike,
    confidence: float = 0.95,
    margin: float = 0.0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> AucComparison:
    """Paired bootstrap of AUC(A) - AUC(B): both scorers read off the same row resamples.

    The interval is the percentile interval of the resampled differences; the two-sided p-value
    is twice the smaller tail share of resampled differences beyond `margin` (+1 smoothed).
    """
    y, pa = check_scores(y_true, proba_a)
    _, pb = check_scores(y_true, proba_b)
    n_pos = int(y.sum())
    method = f"paired_bootstrap({resamples})"
    if n_pos in (0, y.size):
        return _undefined_comparison(y, confidence, margin, method)
    layout_a, layout_b = _AucLayout.of(y, pa), _AucLayout.of(y, pb)
    rng = np.random.default_rng(seed)
    a_to_b = layout_a.to(layout_b)
    diffs = np.concatenate(
        [
            layout_a.aucs(c) - layout_b.aucs(np.take(c, a_to_b, axis=1))
            for c in resample_counts(rng, y.size, resamples)
        ]
    )
    diffs = diffs[np.isfinite(diffs)]
    low, high = percentile_interval(diffs, confidence)
    tail = min(int(np.count_nonzero(diffs <= margin)), int(np.count_nonzero(diffs >= margin)))
    p_value = min(1.0, 2 * (tail + 1) / (diffs.size + 1))
    auc_a, auc_b = roc_auc(y, pa), roc_auc(y, pb)
    return AucComparison(
        auc_a, auc_b, auc_a - auc_b, low, high, p_value, margin, confidence, method, int(y.size), n_pos
    )


# --- internals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AucLayout:
    """One scorer's rows as [non-churners by score, churners by score], with each churner's count
    of non-churners scored below it, so a resample's AUC is a cumulative sum and a gather: O(rows)
    per resample, no sort.

    Resample multiplicities are read in this column order (`columns`).
    """

    columns: NDArray[np.int64]  # row index of each column: negatives sorted, then positives sorted
    n_neg: int
    below: NDArray[np.int64]  # per churner: non-churners scored strictly lower
    at_or_below: NDArray[np.int64] | None  # ... lower or tied; None when no churner ties one

    @classmethod
    def of(cls, y: NDArray[np.int64], p: FloatArray) -> _AucLayout:
        neg_rows, pos_rows = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
        neg_rows = neg_rows[np.argsort(p[neg_rows], kind="stable")]
        pos_rows = pos_rows[np.argsort(p[pos_rows], kind="stable")]
        neg_scores, pos_scores = p[neg_rows], p[pos_rows]
        below = np.searchsorted(neg_scores, pos_scores, side="left")
        at_or_below = np.searchsorted(neg_scores, pos_scores, side="right")
        tied = bool(np.any(at_or_below != below))
        return cls(
            np.concatenate([neg_rows, pos_rows]), int(neg_rows.size), below, at_or_below if tied else None
        )

    def to(self, other: _AucLayout) -> NDArray[np.int64]:
        """Column index that re-orders counts from this layout's columns into `other`'s."""
        column_of_row = np.empty_like(self.columns)
        column_of_row[self.columns] = np.arange(self.columns.size)
        return np.asarray(column_of_row[other.columns], dtype=np.int64)

    def aucs(self, counts: NDArray[np.int64]) -> FloatArray:
        """AUC of each resample (one row of multiplicities per resample, in `columns` order)."""
        cum_neg = np.cumsum(counts[:, : self.n_neg], axis=1)
        pos = counts[:, self.n_neg :]
        pairs = np.einsum("ij,ij->i", pos, _weight_below(cum_neg, self.below))
        if self.at_or_below is not None:  # ties count half
            pairs = 0.5 * (pairs + np.einsum("ij,ij->i", pos, _weight_below(cum_neg, self.at_or_below)))
        n_pos, n_neg = pos.sum(axis=1), cum_neg[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(pairs / (n_pos * n_neg), dtype=np.float64)


def _weight_below(cum_neg: NDArray[np.int64], k: NDArray[np.int64]) -> NDArray[np.int64]:
    """Resampled weight of the first `k` non-churners, per churner (cum_neg holds inclusive sums)."""
    taken = np.take(cum_neg, np.maximum(k - 1, 0), axis=1)
    return np.asarray(taken * (k > 0), dtype=np.int64)


def _delong_components(y: NDArray[np.int64], scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """AUCs and DeLong's structural components (per churner, per non-churner) of each scorer row."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_all = sps.rankdata(np.hstack([pos, neg]), axis=1)
    rank_pos, rank_neg = sps.rankdata(pos, axis=1), sps.rankdata(neg, axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v_pos = (rank_all[:, :m] - rank_pos) / n  # share of non-churners each churner outscores
    v_neg = 1.0 - (rank_all[:, m:] - rank_neg) / m  # share of churners outscoring each non-churner
    return np.asarray(aucs), np.asarray(v_pos), np.asarray(v_neg)


def _cov(rows: FloatArray) -> FloatArray:
    if rows.shape[1] < 2:
        return np.zeros((rows.shape[0], rows.shape[0]))
    return np.asarray(np.cov(rows), dtype=np.float64)


def _undefined_comparison(
    y: NDArray[np.int64], confidence: float, margin: float, method: str
) -> AucComparison:
    nan = math.nan
    return AucComparison(nan, nan, nan, nan, nan, 1.0, margin, confidence, method, int(y.size), int(y.sum()))

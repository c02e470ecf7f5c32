"""Holdout metrics for a binary scorer: ranking, calibration and the decision at a threshold.

Every function takes the labels as 0/1 (or bool) and the scores as probabilities of the
positive class; a row is predicted positive when its probability is >= the threshold,
the same rule the threshold search and the serving path use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score, roc_auc_score

# Clip before the logarithm so one confident mistake costs ~34.5 nats, not infinity.
_LOG_LOSS_EPS = 1e-15

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def check_scores(y_true: ArrayLike, proba: ArrayLike) -> tuple[IntArray, FloatArray]:
    """Return labels as int64 0/1 and scores as float64, or raise ValueError naming the fault."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and proba must be 1-D, got shapes {y.shape} and {p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"y_true and proba differ in length: {y.shape[0]} != {p.shape[0]}")
    if y.size == 0:
        raise ValueError("y_true and proba are empty")
    y_int = y.astype(np.int64)
    if not np.array_equal(y_int, y) or np.any((y_int != 0) & (y_int != 1)):
        raise ValueError("y_true must hold only 0/1 labels")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    return y_int, p


@dataclass(frozen=True)
class ReliabilityCurve:
    """Calibration by equal-width probability bins; bins with no rows are left out.

    All tuples have one entry per non-empty bin, in increasing order of probability.
    """

    n_bins: int
    bin_lower: tuple[float, ...]
    bin_upper: tuple[float, ...]
    mean_predicted: tuple[float, ...]
    observed_frequency: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def ece(self) -> float:
        """Expected calibration error: mean |predicted - observed| per bin, weighted by bin count."""
        counts = np.asarray(self.counts, dtype=np.float64)
        gaps = np.abs(np.asarray(self.mean_predicted) - np.asarray(self.observed_frequency))
        return float(np.sum(counts * gaps) / np.sum(counts))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, with the ECE."""
        return {**asdict(self), "ece": self.ece}


def reliability_curve(y_true: ArrayLike, proba: ArrayLike, n_bins: int = 10) -> ReliabilityCurve:
    """Bin the scores into `n_bins` equal-width bins on [0, 1]; a score of 1.0 falls in the last bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = check_scores(y_true, proba)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Searching the inner edges keeps bin membership consistent with the reported edges.
    index = np.searchsorted(edges[1:-1], p, side="right")
    counts = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y.astype(np.float64), minlength=n_bins)
    filled = counts > 0
    safe = np.where(filled, counts, 1)
    return ReliabilityCurve(
        n_bins=n_bins,
        bin_lower=_floats(edges[:-1][filled]),
        bin_upper=_floats(edges[1:][filled]),
        mean_predicted=_floats((sum_p / safe)[filled]),
        observed_frequency=_floats((sum_y / safe)[filled]),
        counts=tuple(int(c) for c in counts[filled]),
    )


def classification_metrics(
    y_true: ArrayLike, proba: ArrayLike, threshold: float, n_bins: int = 10
) -> dict[str, float]:
    """Ranking, probabilistic and thresholded metrics of one scorer on one labelled set.

    With a single class in `y_true`, `roc_auc` and `pr_auc` are NaN (they are undefined);
    precision, recall and F1 are 0.0 when their denominator is zero, as in scikit-learn's
    `zero_division=0`.
    """
    y, p = check_scores(y_true, proba)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return {
        **ranking_metrics(y, p),
        "log_loss": log_loss(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": reliability_curve(y, p, n_bins).ece,
        **threshold_metrics(y, p, threshold),
        "n": float(y.size),
        "prevalence": float(y.mean()),
    }


def ranking_metrics(y_true: ArrayLike, proba: ArrayLike) -> dict[str, float]:
    """ROC AUC and average precision (PR AUC); both NaN when only one class is present."""
    y, p = check_scores(y_true, proba)
    if np.unique(y).size < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
    }


def log_loss(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Mean negative log-likelihood with probabilities clipped away from 0 and 1."""
    y, p = check_scores(y_true, proba)
    clipped = np.clip(p, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))


def threshold_metrics(y_true: ArrayLike, proba: ArrayLike, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, accuracy and the share predicted positive at `proba >= threshold`."""
    y, p = check_scores(y_true, proba)
    predicted = p >= threshold
    actual = y == 1
    tp = int(np.count_nonzero(predicted & actual))
    fp = int(np.count_nonzero(predicted & ~actual))
    fn = int(np.count_nonzero(~predicted & actual))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": float(np.mean(predicted == actual)),
        "positive_rate": float(np.mean(predicted)),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _floats(values: FloatArray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)

"""Statistics with honest uncertainty: sample-ratio mismatch, intervals for the per-prediction
metrics, Holm's correction, and the bootstrap machinery that core.auc shares.

Conventions:
- Intervals are two-sided at `confidence` (0.95 unless told).
- The bootstrap is the percentile bootstrap over row resamples of the same size, drawn with
  replacement from a seeded generator, so a result is reproducible.
- Per-prediction metrics (log loss, Brier, profit) are means of per-row values: their interval
  is the normal approximation, which is accurate at the sample sizes decisions are made on;
  `bootstrap_mean` is there when a bootstrap interval is wanted (paired differences included).
- A metric with no defined value is NaN, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from churnops.core.metrics import FloatArray, check_scores
from churnops.core.params import BusinessParams

SRM_ALARM_P = 0.001  # GrowthBook's bar: a real mismatch, not noise, at any realistic traffic
DEFAULT_RESAMPLES = 2000
_LOG_LOSS_EPS = 1e-15  # the same clip as core.metrics.log_loss
_CHUNK_CELLS = 1_000_000  # resamples x rows per chunk: 8 MB arrays the allocator reuses, not re-faults

UnitMetric = Literal["log_loss", "brier", "profit"]


class SrmResult(NamedTuple):
    """Chi-square sample-ratio-mismatch test; `alarm` when `p_value < SRM_ALARM_P`."""

    chi2: float
    p_value: float
    alarm: bool


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its two-sided interval, the rows behind it and how it was computed."""

    value: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class MeanSummary:
    """Count, mean and sample variance of a per-unit metric: what a ledger query can aggregate."""

    n: int
    mean: float
    variance: float

    @classmethod
    def from_values(cls, values: ArrayLike) -> MeanSummary:
        """Summarise raw per-unit values."""
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return cls(0, math.nan, math.nan)
        variance = float(np.var(x, ddof=1)) if x.size > 1 else math.nan
        return cls(int(x.size), float(np.mean(x)), variance)

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> MeanSummary:
        """Summarise from COUNT, SUM and SUM of squares (as SQL returns them)."""
        if n <= 0:
            return cls(0, math.nan, math.nan)
        mean = total / n
        variance = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
        return cls(n, mean, variance)

    @property
    def se(self) -> float:
        """Standard error of the mean (NaN below two units)."""
        return math.sqrt(self.variance / self.n) if self.n > 1 else math.nan


# --- sample-ratio mismatch ---------------------------------------------------------------------


def srm_test(
    observed_counts: Sequence[int] | ArrayLike,
    weights: Sequence[float] | ArrayLike,
    alarm_p: float = SRM_ALARM_P,
) -> SrmResult:
    """Chi-square goodness of fit of assignment counts to the arms' weights.

    Weights need not sum to 1. For a bandit, pass each arm's expected count (the sum over weight
    periods of the period's traffic times its share) as its weight. An arm of weight 0 that
    received traffic is an alarm (chi2 = inf); arms of weight 0 with no traffic are left out.
    """
    observed = np.asarray(observed_counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if observed.ndim != 1 or observed.shape != w.shape:
        raise ValueError(
            f"observed_counts and weights must be 1-D of one length, got {observed.shape}, {w.shape}"
        )
    if np.any(observed < 0) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("observed_counts and weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError("weights must sum to a positive total")
    total = observed.sum()
    expected = total * w / w.sum()
    live = expected > 0
    if total == 0:
        return SrmResult(0.0, 1.0, False)
    if np.any(observed[~live] > 0):
        return SrmResult(math.inf, 0.0, True)
    if np.count_nonzero(live) < 2:
        return SrmResult(0.0, 1.0, False)
    chi2 = float(np.sum((observed[live] - expected[live]) ** 2 / expected[live]))
    p_value = float(sps.chi2.sf(chi2, np.count_nonzero(live) - 1))
    return SrmResult(chi2, p_value, p_value < alarm_p)


# --- per-row metric values ---------------------------------------------------------------------


def log_loss_values(y_true: ArrayLike, proba: ArrayLike) -> FloatArray:
    """Per-row negative log-likelihood (its mean is `core.metrics.log_loss`)."""
    y, p = check_scores(y_true, proba)
    clipped = np.clip(p, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    return np.asarray(-(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)), dtype=np.float64)


def brier_values(y_true: ArrayLike, proba: ArrayLike) -> FloatArray:
    """Per-row squared error of the probability."""
    y, p = check_scores(y_true, proba)
    return np.asarray((p - y) ** 2, dtype=np.float64)


def profit_values(
    y_true: ArrayLike, proba: ArrayLike, threshold: float, business: BusinessParams
) -> FloatArray:
    """Per-row profit of the campaign rule in `core.threshold`: a contacted row (proba >= threshold)
    earns y * offer_success_rate * saved_customer_value - contact_cost, any other row 0.

    The sum equals `core.threshold.expected_profit`; the mean is profit per labelled prediction.
    """
    y, p = check_scores(y_true, proba)
    gain = y * (business.offer_success_rate * business.saved_customer_value) - business.contact_cost
    return np.where(p >= threshold, gain, 0.0).astype(np.float64)


def unit_values(
    metric: UnitMetric,
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float | None = None,
    business: BusinessParams | None = None,
) -> FloatArray:
    """Per-row values of a per-unit metric; `profit` needs `threshold` and `business`."""
    if metric == "log_loss":
        return log_loss_values(y_true, proba)
    if metric == "brier":
        return brier_values(y_true, proba)
    if threshold is None or business is None:
        raise ValueError("profit values need the threshold and the business parameters")
    return profit_values(y_true, proba, threshold, business)


# --- intervals ---------------------------------------------------------------------------------


def mean_estimate(values: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Mean with its normal-approximation interval (CLT; exact enough from a few hundred rows)."""
    s = MeanSummary.from_values(values)
    half = z_value(confidence) * s.se if s.n > 1 else math.nan
    return Estimate(s.mean, s.mean - half, s.mean + half, s.n, "normal")


def bootstrap_mean(
    values: ArrayLike, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Estimate:
    """Mean with its percentile-bootstrap interval (pass per-row differences for a paired interval)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("values must be a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    means = np.concatenate([(counts @ x) / x.size for counts in resample_counts(rng, x.size, resamples)])
    low, high = percentile_interval(means, confidence)
    return Estimate(float(np.mean(x)), low, high, int(x.size), f"bootstrap({resamples})")


def proportion_estimate(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """A proportion with its Wilson score interval (sound even near 0 or 1)."""
    if trials <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson")
    z = z_value(confidence)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Estimate(share, max(centre - half, 0.0), min(centre + half, 1.0), trials, "wilson")


def recall_estimate(
    y_true: ArrayLike, proba: ArrayLike, threshold: float, confidence: float = 0.95
) -> Estimate:
    """Share of churners flagged at `proba >= threshold`, with a Wilson interval over the churners."""
    y, p = check_scores(y_true, proba)
    churners = y == 1
    return proportion_estimate(
        int(np.count_nonzero(p[churners] >= threshold)), int(churners.sum()), confidence
    )


# --- multiple arms -----------------------------------------------------------------------------


def holm(p_values: Sequence[float] | ArrayLike) -> FloatArray:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence).

    Reject hypothesis i at level alpha when `holm(p)[i] < alpha`. The procedure is monotone: smaller
    inputs never un-reject, so it stays valid on always-valid p-values checked at every look.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be 1-D")
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


# --- shared machinery ---------------------------------------------------------------------------------


def resample_counts(rng: np.random.Generator, n: int, resamples: int) -> Iterator[NDArray[np.int64]]:
    """Bootstrap row multiplicities of `resamples` bootstrap resamples, in memory-bounded chunks.

    Multiplicities are exchangeable across rows, so a caller may read them in any fixed row
    order (the AUC layouts read them in sorted order, saving a gather per resample).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    per_chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        index = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(index.ravel(), minlength=b * n).reshape(b, n)


def percentile_interval(values: FloatArray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of resampled statistics (NaNs, e.g. one-class resamples, dropped)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def z_value(confidence: float) -> float:
    """Standard-normal quantile for a two-sided interval at `confidence`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(sps.norm.ppf(0.5 + confidence / 2))

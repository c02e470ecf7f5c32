"""Model performance under delayed labels: realised per prediction cohort, estimated before labels.

Predictions are grouped by model version, variant and cohort (the UTC day or Monday-start
week they were made in). For each cohort:

- realised metrics on the predictions whose label is known at `now` (ROC AUC, log loss,
  Brier, ECE, precision and recall at the served decision, retention profit with the
  economics of threshold.py), each with a confidence interval, and the label coverage
  (labelled / predicted). A cohort is *mature* once its end plus the label window has
  passed; before that its realised figures are partial (churners tend to be labelled first).
- estimated metrics from the probabilities alone (CBPE, see performance_stats), marked
  `estimated` everywhere: valid only while the probabilities stay calibrated and the churn
  mechanism does not change (concept drift breaks both).

So the estimate is checked: per version and variant, the labelled predictions of the latest
matured cohorts are pooled (newest first, until there are enough labels), and the estimate
is flagged unreliable when the observed churn rate is off the mean probability, the ECE is
high, or the estimated AUC misses the realised one, each by more than its tolerance plus
sampling noise (z x standard error for the rate and the AUC; for the ECE, the ECE that
perfectly calibrated labels would show by chance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from churnops.core.metrics import reliability_curve
from churnops.core.monitoring_params import PerformanceParams
from churnops.core.params import BusinessParams
from churnops.core.performance_stats import (
    BoolArray,
    Estimate,
    FloatArray,
    auc_delong,
    auc_estimate,
    ece_estimate,
    expected_auc,
    expected_confusion,
    expected_ece,
    mean_estimate,
    realised_log_loss,
    wilson,
    z_value,
)
from churnops.core.windows import check_name, json_ready
from churnops.errors import DataError

DAY = 86_400.0
_WEEK_ORIGIN = 4 * DAY  # 1970-01-05, the first Monday after the epoch
COHORTS: tuple[str, ...] = ("day", "week")
REALISED_METRICS: tuple[str, ...] = ("roc_auc", "log_loss", "brier", "ece", "precision", "recall", "profit")
ESTIMATED_METRICS: tuple[str, ...] = ("roc_auc", "log_loss", "brier", "precision", "recall", "profit")
KINDS: tuple[str, ...] = ("realised", "estimated")
StrArray = NDArray[np.str_]


@dataclass(frozen=True)
class LabelledPredictions:
    """Predictions from the ledger joined with their labels, one array entry per prediction.

    `label` is 1.0/0.0, NaN while unknown; `labelled_at` is when it arrived (NaN: unknown
    time, counted as arrived). Times are Unix seconds. Build with `LabelledPredictions.of`.
    """

    probability: FloatArray
    decision: BoolArray
    label: FloatArray
    predicted_at: FloatArray
    labelled_at: FloatArray
    version: StrArray
    variant: StrArray

    @classmethod
    def of(
        cls,
        *,
        probability: ArrayLike,
        predicted_at: ArrayLike,
        label: ArrayLike | None = None,
        labelled_at: ArrayLike | None = None,
        threshold: ArrayLike | float | None = None,
        decision: ArrayLike | None = None,
        version: ArrayLike | str = "unknown",
        variant: ArrayLike | str = "champion",
    ) -> LabelledPredictions:
        """Check and align the columns (scalars broadcast); the decision defaults to p >= threshold."""
        p = _floats("probability", probability)
        n = p.size
        if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
            raise DataError("performance: probability must hold finite values in [0, 1]")
        if decision is None and threshold is None:
            raise DataError("performance: give the served decision or the threshold of each prediction")
        chosen = (
            np.asarray(decision, dtype=bool)
            if decision is not None
            else p >= _floats("threshold", threshold, n)
        )
        if chosen.shape != (n,):
            raise DataError(f"performance: decision has shape {chosen.shape}, expected ({n},)")
        y = _floats("label", label, n) if label is not None else np.full(n, math.nan)
        if np.any(~np.isnan(y) & (y != 0) & (y != 1)):
            raise DataError("performance: label must be 0, 1 or NaN (not yet known)")
        times = _floats("predicted_at", predicted_at, n)
        if np.any(~np.isfinite(times)):
            raise DataError("performance: predicted_at must be finite Unix times")
        arrived = _floats("labelled_at", labelled_at, n) if labelled_at is not None else np.full(n, math.nan)
        return cls(
            p, chosen, y, times, arrived, _strings("version", version, n), _strings("variant", variant, n)
        )

    def __len__(self) -> int:
        return int(self.probability.size)

    def take(self, index: NDArray[np.intp]) -> LabelledPredictions:
        return LabelledPredictions(
            *(np.asarray(getattr(self, name))[index] for name in self.__dataclass_fields__)
        )


@dataclass(frozen=True)
class CohortPerformance:
    """One cohort of one version and variant: coverage, realised (with CIs) and estimated metrics."""

    version: str
    variant: str
    cohort: str
    start: float
    start_date: str
    n_predicted: int
    n_labelled: int
    label_coverage: float
    mature: bool
    realised_status: str  # "ok", "partial" (labels still arriving) or "not enough data: ..."
    realised: dict[str, Estimate]
    estimated: dict[str, float]
    estimate_reliable: bool | None = None  # from the version's calibration check; None: unchecked


@dataclass(frozen=True)
class CalibrationCheck:
    """Whether the estimate can be trusted, from matured labels of one version and variant."""

    version: str
    variant: str
    cohorts: int
    n_labelled: int
    reliable: bool | None
    reasons: tuple[str, ...]
    mean_predicted: float = math.nan
    observed_rate: float = math.nan
    ece: float = math.nan
    estimated_auc: float = math.nan
    realised_auc: float = math.nan


@dataclass(frozen=True)
class PerformanceReport:
    """Every cohort and calibration check at time `now`."""

    now: float
    cohort: str
    label_window_days: float
    message: str
    cohorts: tuple[CohortPerformance, ...]
    calibration: tuple[CalibrationCheck, ...] = field(default=())

    def metric(self, name: str, kind: str = "realised") -> list[tuple[str, str, str, float]]:
        """(version, variant, cohort start date, value) per cohort; unknown names are InvalidRequest."""
        check_name(kind, KINDS, "performance kind", "kind")
        known = REALISED_METRICS if kind == "realised" else ESTIMATED_METRICS
        check_name(name, known, f"{kind} metric", "metric")
        rows = []
        for c in self.cohorts:
            if kind == "estimated":
                value = c.estimated.get(name, math.nan)
            else:
                value = c.realised[name].value if name in c.realised else math.nan
            rows.append((c.version, c.variant, c.start_date, value))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; estimated metrics sit under `estimated` and carry `estimate_reliable`; NaN is None."""
        result: dict[str, Any] = json_ready(asdict(self))
        return result


def performance_report(
    predictions: LabelledPredictions,
    now: float,
    params: PerformanceParams | None = None,
    business: BusinessParams | None = None,
) -> PerformanceReport:
    """Realised and estimated performance per version, variant and cohort, as known at `now`."""
    params, business = params or PerformanceParams(), business or BusinessParams()
    made = predictions.take(np.flatnonzero(predictions.predicted_at <= now))
    if len(made) == 0:
        return PerformanceReport(
            now, params.cohort, params.label_window_days, "not enough data: no predictions", ()
        )
    starts = cohort_starts(made.predicted_at, params.cohort)
    cohorts: list[CohortPerformance] = []
    checks: list[CalibrationCheck] = []
    for version, variant in sorted(set(zip(made.version.tolist(), made.variant.tolist(), strict=True))):
        members = np.flatnonzero((made.version == version) & (made.variant == variant))
        group, group_starts = made.take(members), starts[members]
        rows = [
            _cohort(group.take(np.flatnonzero(group_starts == start)), float(start), now, params, business)
            for start in np.unique(group_starts)
        ]
        check = calibration_check(group, group_starts, now, params, version, variant)
        checks.append(check)
        cohorts.extend(_with_reliability(row, check.reliable) for row in rows)
    message = f"{len(made)} predictions in {len(cohorts)} cohort{'' if len(cohorts) == 1 else 's'}"
    return PerformanceReport(
        now, params.cohort, params.label_window_days, message, tuple(cohorts), tuple(checks)
    )


def cohort_starts(times: ArrayLike, cohort: str) -> FloatArray:
    """Start (Unix s) of each time's UTC day or Monday-start week; an unknown cohort is InvalidRequest."""
    check_name(cohort, COHORTS, "cohort", "cohort")
    t = np.asarray(times, dtype=np.float64)
    if cohort == "day":
        return np.floor(t / DAY) * DAY
    return np.floor((t - _WEEK_ORIGIN) / (7 * DAY)) * 7 * DAY + _WEEK_ORIGIN


def calibration_check(
    group: LabelledPredictions,
    starts: FloatArray,
    now: float,
    params: PerformanceParams,
    version: str = "",
    variant: str = "",
) -> CalibrationCheck:
    """Pool the known labels of the latest matured cohorts and compare them with the probabilities."""
    known = _known(group, now)
    matured = _latest_matured(starts[known], now, params)
    pooled = group.take(np.flatnonzero(np.isin(starts, matured) & known))
    n = len(pooled)
    if n < params.calibration_min_labels:
        reason = f"unchecked: {n} labels in matured cohorts < min {params.calibration_min_labels}"
        return CalibrationCheck(version, variant, int(matured.size), n, None, (reason,))
    y, p = pooled.label.astype(np.int64), pooled.probability
    z = z_value(params.confidence)
    observed, predicted = float(y.mean()), float(p.mean())
    mean_se = math.sqrt(float(np.sum(p * (1 - p)))) / n
    ece = reliability_curve(y, p, params.calibration_bins).ece
    ece_noise = expected_ece(p, params.calibration_bins)
    estimated, (realised, auc_se) = expected_auc(p), auc_delong(y, p)
    reasons = []
    if abs(observed - predicted) > params.mean_gap_tolerance + z * mean_se:
        reasons.append(f"observed churn rate {observed:.3f} vs mean probability {predicted:.3f}")
    if ece > params.ece_tolerance + ece_noise:
        reasons.append(f"ECE {ece:.3f} > {params.ece_tolerance} + noise {ece_noise:.3f}")
    if math.isfinite(realised) and abs(estimated - realised) > params.auc_gap_tolerance + z * auc_se:
        reasons.append(f"estimated AUC {estimated:.3f} vs realised {realised:.3f}")
    return CalibrationCheck(
        version,
        variant,
        int(matured.size),
        n,
        not reasons,
        tuple(reasons),
        predicted,
        observed,
        ece,
        estimated,
        realised,
    )


def _latest_matured(labelled_starts: FloatArray, now: float, params: PerformanceParams) -> FloatArray:
    """Starts of the newest matured cohorts that together hold enough labels (at most calibration_cohorts)."""
    horizon = _cohort_length(params.cohort) + params.label_window_days * DAY
    starts, counts = np.unique(labelled_starts[labelled_starts + horizon <= now], return_counts=True)
    chosen: list[float] = []
    total = 0
    for start, count in zip(starts[::-1].tolist(), counts[::-1].tolist(), strict=True):
        if len(chosen) == params.calibration_cohorts or total >= params.calibration_min_labels:
            break
        chosen.append(start)
        total += count
    return np.asarray(chosen, dtype=np.float64)


def estimate(p: FloatArray, decision: BoolArray, business: BusinessParams) -> dict[str, float]:
    """CBPE metrics of one set of predictions, assuming calibrated probabilities."""
    if p.size == 0:
        return {}
    tp, fp, fn, _ = expected_confusion(p, decision)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    entropy = -(clipped * np.log(clipped) + (1 - clipped) * np.log1p(-clipped))
    value = business.offer_success_rate * business.saved_customer_value
    return {
        "roc_auc": expected_auc(p),
        "log_loss": float(entropy.mean()),
        "brier": float(np.mean(p * (1 - p))),
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "profit": float(np.sum(p[decision] * value - business.contact_cost)),
        "prevalence": float(p.mean()),
        "positive_rate": float(decision.mean()),
    }


def realise(
    y: NDArray[np.int64],
    p: FloatArray,
    decision: BoolArray,
    params: PerformanceParams,
    business: BusinessParams,
) -> dict[str, Estimate]:
    """Realised metrics with confidence intervals on labelled predictions."""
    z = z_value(params.confidence)
    actual = y == 1
    tp = int(np.count_nonzero(decision & actual))
    value = business.offer_success_rate * business.saved_customer_value
    # threshold.py's profit: each contacted row earns y * success * value - contact cost
    gains = np.where(decision, y * value - business.contact_cost, 0.0)
    return {
        "roc_auc": auc_estimate(y, p, z),
        "log_loss": realised_log_loss(y, p, z),
        "brier": mean_estimate((p - y) ** 2, z),
        "ece": ece_estimate(y, p, params.calibration_bins, params.confidence),
        "precision": wilson(tp, int(np.count_nonzero(decision)), z),
        "recall": wilson(tp, int(np.count_nonzero(actual)), z),
        "profit": mean_estimate(gains, z, scale=float(y.size)),
        "prevalence": wilson(int(actual.sum()), int(y.size), z),
    }


def _cohort(
    rows: LabelledPredictions, start: float, now: float, params: PerformanceParams, business: BusinessParams
) -> CohortPerformance:
    known = _known(rows, now)
    n, labelled = len(rows), int(known.sum())
    mature = start + _cohort_length(params.cohort) + params.label_window_days * DAY <= now
    realised: dict[str, Estimate] = {}
    if labelled < params.min_labels:
        status = f"not enough data: {labelled} labels < min {params.min_labels}"
    else:
        status = "ok" if mature else "partial"
        realised = realise(
            rows.label[known].astype(np.int64),
            rows.probability[known],
            rows.decision[known],
            params,
            business,
        )
    return CohortPerformance(
        version=str(rows.version[0]),
        variant=str(rows.variant[0]),
        cohort=params.cohort,
        start=start,
        start_date=datetime.fromtimestamp(start, tz=UTC).date().isoformat(),
        n_predicted=n,
        n_labelled=labelled,
        label_coverage=labelled / n,
        mature=mature,
        realised_status=status,
        realised=realised,
        estimated=estimate(rows.probability, rows.decision, business),
    )


def _with_reliability(row: CohortPerformance, reliable: bool | None) -> CohortPerformance:
    return CohortPerformance(**{**row.__dict__, "estimate_reliable": reliable})


def _known(rows: LabelledPredictions, now: float) -> BoolArray:
    arrived = np.isnan(rows.labelled_at) | (rows.labelled_at <= now)
    return np.asarray(~np.isnan(rows.label) & arrived, dtype=bool)


def _cohort_length(cohort: str) -> float:
    return DAY if cohort == "day" else 7 * DAY


def _floats(name: str, values: Any, n: int | None = None) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if n is not None and array.ndim == 0:
        array = np.full(n, float(array))
    if array.ndim != 1 or (n is not None and array.size != n):
        raise DataError(f"performance: {name} must be 1-D with {n} entries, got shape {array.shape}")
    return array


def _strings(name: str, values: ArrayLike | str, n: int) -> StrArray:
    if isinstance(values, str):
        return np.full(n, values)
    array = np.asarray(values).astype(str)
    if array.shape != (n,):
        raise DataError(f"performance: {name} must have {n} entries, got shape {array.shape}")
    return array

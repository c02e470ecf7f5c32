"""Drift of one window of served traffic against a model version's reference profile.

Effect sizes, never a p-value: on 100,000 predictions any test rejects "identical
distributions" for differences nobody should act on, while PSI and the Jensen-Shannon
distance measure *how far* the served distribution moved and are comparable across
window sizes. Both are computed on the profile's bins (see drift_profile):

- PSI = sum_i (q_i - p_i) * ln(q_i / p_i), p the reference shares, q the window's. Empty
  bins would make it infinite, so shares are smoothed with a pseudo-count of `smoothing`
  (0.5, Jeffreys) per bin on both sides: p_i = (c_i + 0.5) / (N + 0.5 k). A bin empty on
  both sides carries no evidence and is left out (so the always-empty "unseen" bucket of
  clean traffic adds nothing). Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large.
- Jensen-Shannon distance: the square root of the JS divergence with base-2 logarithms,
  in [0, 1], on the raw shares (it is finite with empty bins, no smoothing needed).

The missing bucket is one of each feature's bins, so a field that stops arriving moves
its PSI; missing and unseen shares are reported beside it, and an unseen share above
`unseen_warn`/`unseen_alert` flags the feature on its own. With no drift at all, PSI is
still about (k - 1) * (1/n + 1/N) for k filled bins, n window and N training rows (it is
chi-square / n for small differences): ~0.005 at n = 2,000 with 10 bins, far below the
0.1 warning. Each feature reports that figure as `psi_noise`; a feature with many rare
categories needs a larger window (its noise grows with k). Below `min_window`
predictions nothing is judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from churnops.core.drift_profile import TOTAL_INDEX, CategoricalShares, NumericalBins, ReferenceProfile
from churnops.core.monitoring_params import DriftParams
from churnops.core.windows import check_name, json_ready
from churnops.errors import DataError

Status = Literal["ok", "warn", "alert", "not_judged", "no_data"]
_RANK: dict[str, int] = {"no_data": -2, "not_judged": -1, "ok": 0, "warn": 1, "alert": 2}
DRIFT_STATISTICS: tuple[str, ...] = ("psi", "js_distance")


def psi(reference: ArrayLike, current: ArrayLike, smoothing: float = 0.5) -> float:
    """Population stability index of `current` counts against `reference` counts (module docstring)."""
    ref, cur = _pair(reference, current)
    if ref.sum() == 0 or cur.sum() == 0:
        return math.nan
    keep = (ref > 0) | (cur > 0)
    ref, cur = ref[keep] + smoothing, cur[keep] + smoothing
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: ArrayLike, current: ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors."""
    ref, cur = _pair(reference, current)
    if ref.sum() == 0 or cur.sum() == 0:
        return math.nan
    p, q = ref / ref.sum(), cur / cur.sum()
    m = 0.5 * (p + q)
    divergence = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return float(math.sqrt(max(divergence, 0.0)))


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature in one window; `unseen_share` is None for numerical features."""

    feature: str
    kind: str
    psi: float
    js_distance: float
    psi_noise: float  # what PSI is expected to be with no drift at all, at this window size
    missing_share: float
    reference_missing_share: float
    unseen_share: float | None
    status: Status
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DriftReport:
    """The judgement of one window: per feature, the prediction distribution, and overall.

    `status` is "no_data" for an empty window and "not_judged" below `min_window` (the
    statistics are still filled in when n > 0, for display, but nothing is flagged).
    """

    status: Status
    n: int
    min_window: int
    message: str
    features: tuple[FeatureDrift, ...]
    prediction_psi: float
    prediction_js_distance: float
    prediction_status: Status
    drifted_share: float  # share of features at warn or worse
    alerted_share: float  # share of features at alert

    @property
    def judged(self) -> bool:
        return self.status not in ("no_data", "not_judged")

    def worst_first(self) -> list[FeatureDrift]:
        """Features by status, then PSI, worst first (NaN last)."""
        return sorted(
            self.features,
            key=lambda f: (-_RANK[f.status], -(f.psi if math.isfinite(f.psi) else -1.0), f.feature),
        )

    def statistic(self, name: str) -> dict[str, float]:
        """One statistic (`psi` or `js_distance`) per feature; an unknown name is InvalidRequest."""
        check_name(name, DRIFT_STATISTICS, "drift statistic", "metric")
        return {f.feature: float(getattr(f, name)) for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, features worst first; NaN becomes None."""
        data = asdict(self)
        data["judged"] = self.judged
        data["features"] = [asdict(f) for f in self.worst_first()]
        result: dict[str, Any] = json_ready(data)
        return result


def drift_report(
    profile: ReferenceProfile, counts: ArrayLike, params: DriftParams | None = None
) -> DriftReport:
    """Judge one window's counts (the profile's layout, e.g. merged accumulator snapshots)."""
    params = params or DriftParams()
    window = _check_counts(profile, counts)
    reference = profile.reference_vector()
    layout = profile.layout()
    n = int(window[TOTAL_INDEX])
    judged = n >= params.min_window
    features = tuple(
        _feature_drift(
            feature,
            reference[layout.features[feature.name]],
            window[layout.features[feature.name]],
            params,
            judged,
        )
        for feature in profile.features
    )
    ref_pred, cur_pred = reference[layout.prediction], window[layout.prediction]
    prediction_psi = psi(ref_pred, cur_pred, params.smoothing)
    prediction_status = _psi_status(prediction_psi, params) if judged else _unjudged(n)
    drifted = sum(_RANK[f.status] >= _RANK["warn"] for f in features) / len(features)
    alerted = sum(f.status == "alert" for f in features) / len(features)
    status, message = _overall(n, params, features, prediction_status, drifted)
    return DriftReport(
        status=status,
        n=n,
        min_window=params.min_window,
        message=message,
        features=features,
        prediction_psi=prediction_psi,
        prediction_js_distance=js_distance(ref_pred, cur_pred),
        prediction_status=prediction_status,
        drifted_share=drifted,
        alerted_share=alerted,
    )


def _feature_drift(
    feature: NumericalBins | CategoricalShares,
    reference: NDArray[np.int64],
    window: NDArray[np.int64],
    params: DriftParams,
    judged: bool,
) -> FeatureDrift:
    n, n_ref = int(window.sum()), int(reference.sum())
    value_psi = psi(reference, window, params.smoothing)
    missing = _share(window[-1], n)
    unseen = _share(window[-2], n) if isinstance(feature, CategoricalShares) else None
    status: Status
    reasons: list[str] = []
    if not judged:
        status = _unjudged(n)
    else:
        status = _psi_status(value_psi, params)
        if status != "ok":
            reasons.append(f"psi {value_psi:.3f} >= {_limit(status, params.psi_warn, params.psi_alert)}")
        if unseen is not None:
            unseen_status = _level(unseen, params.unseen_warn, params.unseen_alert)
            if unseen_status != "ok":
                limit = _limit(unseen_status, params.unseen_warn, params.unseen_alert)
                reasons.append(f"unseen categories {unseen:.1%} >= {limit:.1%}")
                status = max(status, unseen_status, key=_RANK.__getitem__)
    return FeatureDrift(
        feature=feature.name,
        kind=feature.kind,
        psi=value_psi,
        js_distance=js_distance(reference, window),
        psi_noise=_psi_noise(reference, window),
        missing_share=missing,
        reference_missing_share=_share(reference[-1], n_ref),
        unseen_share=unseen,
        status=status,
        reasons=tuple(reasons),
    )


def _overall(
    n: int, params: DriftParams, features: Sequence[FeatureDrift], prediction: Status, drifted: float
) -> tuple[Status, str]:
    if n == 0:
        return "no_data", "not enough data: no predictions in this window"
    if n < params.min_window:
        return "not_judged", f"not judged: N={n} < min {params.min_window}"
    worst = max([*(f.status for f in features), prediction], key=_RANK.__getitem__)
    if drifted >= params.drifted_share_alert:
        worst = "alert"
    flagged = [f.feature for f in features if f.status in ("warn", "alert")]
    if prediction in ("warn", "alert"):
        flagged.append("prediction")
    if worst == "ok":
        return "ok", f"no drift in {n} predictions"
    names = ", ".join(flagged)
    return worst, f"{worst}: {names} drifted ({drifted:.0%} of features) in {n} predictions"


def _psi_noise(reference: NDArray[np.int64], window: NDArray[np.int64]) -> float:
    n, n_ref = int(window.sum()), int(reference.sum())
    if n == 0 or n_ref == 0:
        return math.nan
    filled = int(np.count_nonzero((reference > 0) | (window > 0)))
    return max(filled - 1, 0) * (1.0 / n + 1.0 / n_ref)


def _psi_status(value: float, params: DriftParams) -> Status:
    return _level(value, params.psi_warn, params.psi_alert)


def _level(value: float, warn: float, alert: float) -> Status:
    if not math.isfinite(value):
        return "ok"
    if value >= alert:
        return "alert"
    return "warn" if value >= warn else "ok"


def _limit(status: Status, warn: float, alert: float) -> float:
    return alert if status == "alert" else warn


def _unjudged(n: int) -> Status:
    return "no_data" if n == 0 else "not_judged"


def _share(count: Any, n: int) -> float:
    return float(count) / n if n else math.nan


def _pair(reference: ArrayLike, current: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise DataError(f"drift: count vectors differ in shape: {ref.shape} vs {cur.shape}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise DataError("drift: counts must be non-negative")
    return ref, cur


def _kl(p: NDArray[np.float64], q: NDArray[np.float64]) -> float:
    keep = p > 0
    return float(np.sum(p[keep] * np.log2(p[keep] / q[keep])))


def _check_counts(profile: ReferenceProfile, counts: ArrayLike) -> NDArray[np.int64]:
    window = np.asarray(counts)
    size = profile.layout().size
    if window.shape != (size,):
        raise DataError(
            f"drift: counts have shape {window.shape}, the profile's layout has {size} bins "
            "(counts from another model version?)"
        )
    if not np.issubdtype(window.dtype, np.integer) or np.any(window < 0):
        raise DataError("drift: counts must be non-negative integers")
    return np.asarray(window, dtype=np.int64)

"""Per-slice metrics and group-fairness gaps on a labelled evaluation set.

Slices (the spec's `slices`) show where the model is weaker; fairness gaps (the spec's
`pii`) compare how often each group is flagged (demographic parity) and how many of its
churners are caught (equal opportunity). Columns come in as arrays aligned with the
labels; numeric columns such as age must be bucketed first with `bucket_numeric`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from churnops.core.metrics import FloatArray, IntArray, check_scores, ranking_metrics, threshold_metrics

MISSING = "missing"
# A numeric column with more distinct values than this is a measurement, not a group label.
_MAX_NUMERIC_LEVELS = 20
_MISSING_TEXT = frozenset({"", "nan", "NaN", "None", "<NA>", "NaT"})

StrArray = NDArray[np.str_]


@dataclass(frozen=True)
class SliceResult:
    """Metrics of one value of one slice column; `roc_auc` is NaN when the slice has one class."""

    column: str
    value: str
    n: int
    prevalence: float
    positive_rate: float
    roc_auc: float
    precision: float
    recall: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN becomes None."""
        return _json_dict(asdict(self))


@dataclass(frozen=True)
class GroupRates:
    """Decision rates of one group; `true_positive_rate` is NaN when the group has no churners."""

    group: str
    n: int
    positive_rate: float
    true_positive_rate: float


@dataclass(frozen=True)
class FairnessGap:
    """Largest between-group differences in decision rates for one protected column."""

    column: str
    demographic_parity_difference: float
    equal_opportunity_difference: float
    groups: tuple[GroupRates, ...]

    @property
    def max_gap(self) -> float:
        """The larger of the two differences, ignoring an undefined (NaN) one."""
        gaps = (self.demographic_parity_difference, self.equal_opportunity_difference)
        defined = [g for g in gaps if not math.isnan(g)]
        return max(defined) if defined else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN becomes None."""
        return _json_dict(asdict(self))


def bucket_numeric(values: ArrayLike, edges: Sequence[float] = (30, 45, 60)) -> StrArray:
    """Label numbers by half-open bucket: with the default edges "<30", "30-45", "45-60", ">=60".

    A value equal to an edge goes to the bucket above it; NaN (or None) becomes "missing".
    """
    cuts = np.asarray(edges, dtype=np.float64)
    if cuts.ndim != 1 or cuts.size == 0 or np.any(np.diff(cuts) <= 0):
        raise ValueError(f"edges must be a non-empty, strictly increasing sequence, got {list(edges)}")
    numbers = np.asarray(values, dtype=np.float64)
    names = [f"<{cuts[0]:g}"]
    names += [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(cuts)]
    names.append(f">={cuts[-1]:g}")
    labels = np.asarray(names)[np.searchsorted(cuts, numbers, side="right")]
    return np.where(np.isnan(numbers), MISSING, labels)


def slice_metrics(
    groups: Mapping[str, ArrayLike],
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float,
    min_count: int = 30,
) -> dict[str, list[SliceResult]]:
    """Metrics per value of each slice column, largest slices first.

    Values with fewer than `min_count` rows are left out: their estimates are too noisy to act on.
    """
    y, p = check_scores(y_true, proba)
    results: dict[str, list[SliceResult]] = {}
    for column, values in groups.items():
        rows = [
            _slice_result(column, label, y[index], p[index], threshold)
            for label, index in _group_indices(column, values, y.size)
            if index.size >= min_count
        ]
        results[column] = rows
    return results


def fairness_gaps(
    groups: Mapping[str, ArrayLike],
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float,
    min_count: int = 1,
) -> dict[str, FairnessGap]:
    """Demographic-parity and equal-opportunity differences per protected column.

    Demographic parity: max − min share predicted positive across groups. Equal opportunity:
    max − min true-positive rate across the groups that have churners (NaN if none has;
    0.0 if only one has). Groups with fewer than `min_count` rows are left out.
    """
    y, p = check_scores(y_true, proba)
    predicted = p >= threshold
    gaps: dict[str, FairnessGap] = {}
    for column, values in groups.items():
        rates = tuple(
            _group_rates(label, y[index], predicted[index])
            for label, index in _group_indices(column, values, y.size)
            if index.size >= min_count
        )
        gaps[column] = FairnessGap(
            column=column,
            demographic_parity_difference=_spread([r.positive_rate for r in rates]),
            equal_opportunity_difference=_spread([r.true_positive_rate for r in rates]),
            groups=rates,
        )
    return gaps


def group_labels(column: str, values: ArrayLike) -> StrArray:
    """Values as string labels with every flavour of missing mapped to "missing".

    Raises ValueError for a numeric column with many distinct values: bucket it first.
    """
    array = np.asarray(values)
    if array.dtype.kind in "iuf" and np.unique(array[~_isnan(array)]).size > _MAX_NUMERIC_LEVELS:
        raise ValueError(
            f"{column}: numeric with more than {_MAX_NUMERIC_LEVELS} distinct values; "
            "bucket it with bucket_numeric first"
        )
    labels = array.astype(str)
    return np.where(np.isin(labels, list(_MISSING_TEXT)), MISSING, labels)


def _group_indices(column: str, values: ArrayLike, n: int) -> list[tuple[str, IntArray]]:
    """Row indices of each group, largest group first (one sort, not one scan per group)."""
    labels = group_labels(column, values)
    if labels.shape != (n,):
        raise ValueError(f"{column}: {labels.shape[0]} values for {n} labels")
    names, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    chunks = np.split(order, np.cumsum(counts)[:-1])
    pairs = [(str(name), chunk.astype(np.int64)) for name, chunk in zip(names, chunks, strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[1].size, pair[0]))


def _slice_result(column: str, label: str, y: IntArray, p: FloatArray, threshold: float) -> SliceResult:
    decision = threshold_metrics(y, p, threshold)
    return SliceResult(
        column=column,
        value=label,
        n=int(y.size),
        prevalence=float(y.mean()),
        positive_rate=decision["positive_rate"],
        roc_auc=ranking_metrics(y, p)["roc_auc"],
        precision=decision["precision"],
        recall=decision["recall"],
    )


def _group_rates(label: str, y: IntArray, predicted: NDArray[np.bool_]) -> GroupRates:
    churners = y == 1
    tpr = float(predicted[churners].mean()) if churners.any() else math.nan
    return GroupRates(
        group=label, n=int(y.size), positive_rate=float(predicted.mean()), true_positive_rate=tpr
    )


def _spread(rates: list[float]) -> float:
    defined = [r for r in rates if not math.isnan(r)]
    return max(defined) - min(defined) if defined else math.nan


def _isnan(array: NDArray[Any]) -> NDArray[np.bool_]:
    if array.dtype.kind == "f":
        return np.asarray(np.isnan(array), dtype=np.bool_)
    return np.zeros(array.shape, dtype=np.bool_)


def _json_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN with None, recursively, so `json.dumps(..., allow_nan=False)` works."""
    return {key: _json_value(item) for key, item in data.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return _json_dict(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value

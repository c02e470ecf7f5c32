"""The reference profile of a model version: what its training data and its predictions looked like.

Built once at training from the model's TRAINING rows (never a later candidate's holdout)
and the model's probabilities on them, stored with the version as JSON (`to_dict` /
`from_dict`). Per raw spec feature it keeps:

- numerical: inner bin edges at the training quantiles (10 bins by default; tied quantiles
  collapse, so a discrete feature gets one bin per frequent value) with open-ended first and
  last bins, the training count per bin, and the count of missing values (`to_float`
  semantics: unparseable or non-finite is missing);
- categorical: the most frequent category keys (`category_key` semantics, at most
  `max_categories`) with their counts, one "other" bucket for rarer training categories, an
  "unseen" bucket (always 0 in the reference: it counts served keys training never had) and
  the missing count;
- the prediction distribution: quantile bins on the training probabilities.

Every window of served traffic is a flat int64 vector in the profile's layout (`ProfileLayout`):
index 0 holds the number of predictions, then each feature's bins in profile order (numerical:
bins then missing; categorical: categories, other, unseen, missing), then the prediction bins.
`reference_vector()` is the training data in that same layout, so one function compares both.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churnops.core.features import _column_keys, _numeric_values  # the transformer's exact semantics
from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, DataError

PROFILE_FORMAT = "churnops.reference-profile/1"
TOTAL_INDEX = 0  # where a counts vector holds its number of predictions

Counts = NDArray[np.int64]
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class NumericalBins(BaseModel):
    """Training distribution of one numerical feature: bin i holds edges[i-1] <= x < edges[i]."""

    model_config = _FROZEN
    kind: Literal["numerical"] = "numerical"
    name: str
    edges: tuple[float, ...]  # strictly increasing, finite; len(edges) + 1 bins
    counts: tuple[int, ...]
    missing: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> NumericalBins:
        edges = np.asarray(self.edges, dtype=np.float64)
        if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0)):
            raise ValueError(f"{self.name}: edges must be finite and strictly increasing")
        _check_counts(self.name, self.counts, len(self.edges) + 1)
        return self

    @property
    def width(self) -> int:
        """Bins in the counts layout: one per interval, then missing."""
        return len(self.edges) + 2

    def reference_counts(self) -> list[int]:
        return [*self.counts, self.missing]

    def bin_labels(self) -> list[str]:
        edges = [f"{e:g}" for e in self.edges]
        if not edges:
            return ["all", "missing"]
        inner = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
        return [f"< {edges[0]}", *inner, f">= {edges[-1]}", "missing"]


class CategoricalShares(BaseModel):
    """Training distribution of one categorical feature, by category key."""

    model_config = _FROZEN
    kind: Literal["categorical"] = "categorical"
    name: str
    categories: tuple[str, ...]  # the most frequent training keys, most frequent first
    counts: tuple[int, ...]
    other: int = Field(ge=0)  # training rows whose key is beyond the cap
    other_keys: tuple[str, ...] = ()  # those keys (up to max_other_keys): 'other', not 'unseen', when served
    other_overflow: bool = False  # training had more rare keys than that: unknown keys count as 'other'
    missing: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> CategoricalShares:
        _check_counts(self.name, self.counts, len(self.categories))
        known = [*self.categories, *self.other_keys]
        if len(set(known)) != len(known):
            raise ValueError(f"{self.name}: a category is listed twice")
        return self

    @property
    def width(self) -> int:
        """Bins in the counts layout: categories, other, unseen, missing."""
        return len(self.categories) + 3

    def reference_counts(self) -> list[int]:
        return [*self.counts, self.other, 0, self.missing]

    def bin_labels(self) -> list[str]:
        return [*self.categories, "(other)", "(unseen)", "missing"]


class PredictionBins(BaseModel):
    """Training distribution of the model's probabilities, same interval rule as NumericalBins."""

    model_config = _FROZEN
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @model_validator(mode="after")
    def _check(self) -> PredictionBins:
        if list(self.edges) != sorted(set(self.edges)):
            raise ValueError("prediction: edges must be strictly increasing")
        _check_counts("prediction", self.counts, len(self.edges) + 1)
        return self

    @property
    def width(self) -> int:
        return len(self.edges) + 1


FeatureProfile = Annotated[NumericalBins | CategoricalShares, Field(discriminator="kind")]


@dataclass(frozen=True)
class ProfileLayout:
    """Where each feature's bins sit in a flat counts vector."""

    size: int
    features: dict[str, slice]
    prediction: slice


class ReferenceProfile(BaseModel):
    """Per-feature bins and shares plus the prediction distribution of one model version's training data."""

    model_config = _FROZEN
    format: Literal["churnops.reference-profile/1"] = "churnops.reference-profile/1"
    n_rows: int = Field(ge=1)
    features: tuple[FeatureProfile, ...] = Field(min_length=1)
    prediction: PredictionBins

    @model_validator(mode="after")
    def _check(self) -> ReferenceProfile:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("features: a feature is listed twice")
        for feature in self.features:
            if sum(feature.reference_counts()) != self.n_rows:
                raise ValueError(f"{feature.name}: counts do not add up to n_rows={self.n_rows}")
        if sum(self.prediction.counts) != self.n_rows:
            raise ValueError(f"prediction: counts do not add up to n_rows={self.n_rows}")
        return self

    def feature(self, name: str) -> NumericalBins | CategoricalShares:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"no feature {name!r} in the reference profile (known: {self.feature_names})")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def layout(self) -> ProfileLayout:
        """Offsets of every feature and of the prediction bins in a counts vector."""
        start = TOTAL_INDEX + 1
        slices: dict[str, slice] = {}
        for feature in self.features:
            slices[feature.name] = slice(start, start + feature.width)
            start += feature.width
        prediction = slice(start, start + self.prediction.width)
        return ProfileLayout(size=prediction.stop, features=slices, prediction=prediction)

    def reference_vector(self) -> Counts:
        """The training data as a counts vector in `layout()`."""
        values = [self.n_rows]
        for feature in self.features:
            values.extend(feature.reference_counts())
        values.extend(self.prediction.counts)
        return np.asarray(values, dtype=np.int64)

    def fingerprint(self) -> str:
        """A short content hash: counts from workers can be merged only under the same fingerprint."""
        payload = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check_spec(self, spec: DatasetSpec) -> None:
        """Raise ConfigError unless the profile describes exactly the spec's features, by kind."""
        expected = [(c, "numerical") for c in spec.features.numerical]
        expected += [(c, "categorical") for c in spec.features.categorical]
        got = [(f.name, f.kind) for f in self.features]
        if sorted(got) != sorted(expected):
            raise ConfigError(
                f"reference profile features {sorted(got)} do not match "
                f"the spec {spec.name!r} {sorted(expected)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (store it as a model artifact)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceProfile:
        """Parse a stored profile; a malformed one is a DataError naming the field at fault."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "profile"
            raise DataError(f"reference profile: {where}: {first['msg']}") from err


def build_profile(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    probabilities: ArrayLike,
    *,
    numeric_bins: int = 10,
    max_categories: int = 50,
    max_other_keys: int = 1000,
    prediction_bins: int = 10,
    min_pii_count: int = 1,
) -> ReferenceProfile:
    """The reference profile of the training rows `frame` and the model's probabilities on them.

    A PII column's key seen in fewer than `min_pii_count` rows is never stored (it could single a
    customer out): it counts as 'other', and so does any key served later that the profile lacks.
    """
    if numeric_bins < 2 or prediction_bins < 2 or max_categories < 1 or max_other_keys < 0:
        raise ConfigError("reference profile: need >= 2 bins, >= 1 category and max_other_keys >= 0")
    if len(frame) == 0:
        raise DataError("reference profile: no training rows")
    absent = [c for c in spec.feature_columns if c not in frame.columns]
    if absent:
        raise DataError(f"reference profile: feature column(s) missing from the frame: {absent}")
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.shape != (len(frame),) or not np.all(np.isfinite(proba)):
        raise DataError(f"reference profile: need {len(frame)} finite probabilities, got shape {proba.shape}")
    features: list[NumericalBins | CategoricalShares] = [
        _numerical(col, _numeric_values(frame[col]), numeric_bins) for col in spec.features.numerical
    ]
    features += [
        _categorical(col, frame[col], max_categories, max_other_keys, min_pii_count if col in spec.pii else 1)
        for col in spec.features.categorical
    ]
    edges = _quantile_edges(proba, prediction_bins)
    prediction = PredictionBins(edges=edges, counts=_bin_counts(proba, edges))
    return ReferenceProfile(n_rows=len(frame), features=tuple(features), prediction=prediction)


def frame_counts(profile: ReferenceProfile, frame: pd.DataFrame, probabilities: ArrayLike) -> Counts:
    """The counts vector of a whole frame of raw records at once (batch scoring, the ledger, tests).

    Equal, bin for bin, to folding every row into a DriftAccumulator.
    """
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.shape != (len(frame),):
        raise DataError(f"drift counts: need {len(frame)} probabilities, got shape {proba.shape}")
    absent = [name for name in profile.feature_names if name not in frame.columns]
    if absent:
        raise DataError(f"drift counts: feature column(s) missing from the frame: {absent}")
    out = np.zeros(profile.layout().size, dtype=np.int64)
    out[TOTAL_INDEX] = len(frame)
    start = TOTAL_INDEX + 1
    for feature in profile.features:
        if isinstance(feature, CategoricalShares):
            index = _category_bins(feature, frame[feature.name])
        else:
            values = _numeric_values(frame[feature.name])
            edges = np.asarray(feature.edges, dtype=np.float64)
            index = np.where(
                np.isnan(values), feature.width - 1, np.searchsorted(edges, values, side="right")
            )
        out[start : start + feature.width] = np.bincount(index, minlength=feature.width)
        start += feature.width
    edges = np.asarray(profile.prediction.edges, dtype=np.float64)
    index = np.searchsorted(edges, proba, side="right")
    out[start:] = np.bincount(index, minlength=profile.prediction.width)
    return out


def _category_bins(feature: CategoricalShares, series: pd.Series) -> NDArray[np.intp]:
    """Bin (within the feature) of each row: category, other, unseen or missing."""
    other = len(feature.categories)
    lookup = {key: i for i, key in enumerate(feature.categories)} | dict.fromkeys(feature.other_keys, other)
    unknown = other if feature.other_overflow else other + 1
    codes, keys = _column_keys(series)
    per_code = [other + 2 if key is None else lookup.get(key, unknown) for key in keys]
    return np.asarray(per_code, dtype=np.intp)[codes]


def _numerical(name: str, values: NDArray[np.float64], bins: int) -> NumericalBins:
    present = values[~np.isnan(values)]
    edges = _quantile_edges(present, bins)
    missing = int(values.size - present.size)
    return NumericalBins(name=name, edges=edges, counts=_bin_counts(present, edges), missing=missing)


def _categorical(
    name: str, series: pd.Series, max_categories: int, max_other_keys: int, min_count: int = 1
) -> CategoricalShares:
    codes, keys = _column_keys(series)
    per_code = np.bincount(codes, minlength=len(keys)).tolist()
    totals: dict[str, int] = {}
    missing = 0
    for key, count in zip(keys, per_code, strict=True):
        if key is None:
            missing += count
        else:
            totals[key] = totals.get(key, 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    common = [(k, c) for k, c in ranked if c >= min_count]
    top, rest = common[:max_categories], common[max_categories:]
    rare = sum(c for k, c in ranked if c < min_count)  # counted, never named
    return CategoricalShares(
        name=name,
        categories=tuple(k for k, _ in top),
        counts=tuple(c for _, c in top),
        other=sum(c for _, c in rest) + rare,
        other_keys=tuple(k for k, _ in rest[:max_other_keys]),
        other_overflow=len(rest) > max_other_keys or rare > 0,
        missing=missing,
    )


def _quantile_edges(values: NDArray[np.float64], bins: int) -> tuple[float, ...]:
    """Inner edges at the 1/bins, 2/bins, ... quantiles; tied quantiles collapse into one edge."""
    if values.size == 0:
        return ()
    quantiles = np.quantile(values, np.arange(1, bins) / bins)
    return tuple(float(e) for e in np.unique(quantiles))


def _bin_counts(values: NDArray[np.float64], edges: Sequence[float]) -> tuple[int, ...]:
    """Counts per bin with the accumulator's rule: bin = bisect_right(edges, x)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return tuple(int(c) for c in np.bincount(index, minlength=len(edges) + 1))


def _check_counts(name: str, counts: Sequence[int], expected: int) -> None:
    if len(counts) != expected:
        raise ValueError(f"{name}: {len(counts)} counts for {expected} bins")
    if any(c < 0 for c in counts):
        raise ValueError(f"{name}: counts must be non-negative")

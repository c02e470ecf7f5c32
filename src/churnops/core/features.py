"""FeatureTransformer: raw spec columns to a float64 matrix, identically in batch and per request.

Training/serving skew is ruled out by construction: both paths turn a raw value into a
number or a category key with the same scalar functions (`to_float`, `category_key`),
and look keys up in the same dicts fitted on the training split. The batch path only
vectorises the *lookup*: it factorizes a column, maps each distinct value through the
scalar function once, and indexes the result by the codes.

Output layout, in order: per numerical column its imputed value and, when training had
missing values, a `<col>__missing` indicator; per categorical column a one-hot block of
its top categories (`<col>=<key>`) plus `<col>=__missing__` when training had missing
values; then the engineered features: buckets, ratios, counts, crosses.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import pandas as pd

from churnops.core.params import FeatureParams
from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, DataError

MISSING = "__missing__"
NAN = math.nan

CategoryKey = str | None  # None means missing
CrossKey = tuple[str, str] | None
K = TypeVar("K", bound=Hashable)

FloatArray = np.ndarray[tuple[int], np.dtype[np.float64]]
IntArray = np.ndarray[tuple[int], np.dtype[np.intp]]


def to_float(value: object) -> float:
    """A raw numerical value as a float; anything unparseable or non-finite is NaN (missing)."""
    if isinstance(value, float | np.floating | int | np.integer | np.bool_):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return NAN
    else:  # None, pd.NA and any other object
        return NAN
    return number if math.isfinite(number) else NAN


def category_key(value: object) -> CategoryKey:
    """A raw categorical value as its category key; None when the value is missing.

    Numbers that compare equal get the same key (1, 1.0, True and "1" all give "1"),
    which also keeps us consistent with pandas' factorize, which merges equal objects.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else str(number)
    if isinstance(value, int | np.integer | np.bool_):
        return str(int(value))
    try:
        if value != value:  # noqa: PLR0124  NaT and other self-unequal missing markers
            return None
    except TypeError:  # pd.NA: its truth value is ambiguous
        return None
    return str(value)


def _numeric_values(series: pd.Series) -> FloatArray:
    """A column as float64 with NaN for missing, agreeing with `to_float` value by value."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        values: FloatArray = series.to_numpy(dtype=np.float64, na_value=NAN, copy=True)
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=False)
        values = np.array([to_float(u) for u in uniques], dtype=np.float64)[codes]
    values[~np.isfinite(values)] = NAN
    return values


def _column_keys(series: pd.Series) -> tuple[IntArray, list[CategoryKey]]:
    """Codes per row and the category key of each code."""
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.intp), [category_key(u) for u in uniques]


def _pair_keys(
    a: tuple[IntArray, list[CategoryKey]], b: tuple[IntArray, list[CategoryKey]]
) -> tuple[IntArray, list[CrossKey]]:
    """Codes per row and the cross key of each code; missing when either side is."""
    (codes_a, keys_a), (codes_b, keys_b) = a, b
    width = max(len(keys_b), 1)
    codes, uniques = pd.factorize(codes_a * width + codes_b)
    keys: list[CrossKey] = []
    for combined in uniques.tolist():
        key_a, key_b = keys_a[combined // width], keys_b[combined % width]
        keys.append(None if key_a is None or key_b is None else (key_a, key_b))
    return np.asarray(codes, dtype=np.intp), keys


def _top_keys(
    codes: IntArray, keys: Sequence[K | None], limit: int, min_count: int = 1
) -> tuple[list[K], bool]:
    """The `limit` most frequent keys seen at least `min_count` times (ties by key), and whether any
    value was missing."""
    counts: dict[K, int] = {}
    has_missing = False
    for key, count in zip(keys, np.bincount(codes, minlength=len(keys)).tolist(), strict=True):
        if key is None:
            has_missing = True
        else:
            counts[key] = counts.get(key, 0) + count
    ranked = sorted(
        ((k, c) for k, c in counts.items() if c >= min_count), key=lambda item: (-item[1], item[0])
    )
    return [key for key, _ in ranked[:limit]], has_missing


def _lookup_codes(codes: IntArray, keys: Sequence[K], lookup: Mapping[K, int]) -> IntArray:
    """Output index per row (-1 when the key has no column)."""
    return np.array([lookup.get(key, -1) for key in keys], dtype=np.intp)[codes]


def _scatter_ones(out: np.ndarray, columns: IntArray) -> None:
    rows = np.flatnonzero(columns >= 0)
    out[rows, columns[rows]] = 1.0


class FeatureTransformer:
    """Fit on the training split, then transform frames (batch) or dicts (per request)."""

    def __init__(self, spec: DatasetSpec, params: FeatureParams) -> None:
        self.spec = spec
        self.params = params
        numerical, categorical = set(spec.features.numerical), set(spec.features.categorical)
        self._buckets = {c: _check_edges(c, e) for c, e in params.buckets.items() if c in numerical}
        self._ratios = {n: r for n, r in params.ratios.items() if set(r) <= numerical}
        self._counts = {
            n: (tuple(c.columns), c.value) for n, c in params.counts.items() if set(c.columns) <= categorical
        }
        self._crosses = [(a, b) for a, b in params.crosses if {a, b} <= categorical]
        self.active_engineered: list[str] = [
            *(f"{c}__bucket" for c in self._buckets),
            *self._ratios,
            *self._counts,
            *(f"{a}|{b}" for a, b in self._crosses),
        ]
        self._reset()

    def _reset(self) -> None:
        self.fitted = False
        self.output_names: list[str] = []
        self.output_sources: list[tuple[str, ...]] = []
        # Fitted plans: plain tuples of (column(s), fitted values, output indices).
        self._numeric: list[tuple[str, float, int, int]] = []
        self._categorical: list[tuple[str, dict[CategoryKey, int]]] = []
        self._bucket_plan: list[tuple[str, list[float], FloatArray, int]] = []
        self._ratio_plan: list[tuple[str, str, int]] = []
        self._count_plan: list[tuple[tuple[str, ...], str, int]] = []
        self._cross_plan: list[tuple[str, str, dict[CrossKey, int]]] = []

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def _add_output(self, name: str, sources: tuple[str, ...]) -> int:
        self.output_names.append(name)
        self.output_sources.append(sources)
        return len(self.output_names) - 1

    def fit(self, frame: pd.DataFrame) -> FeatureTransformer:
        """Learn medians, missing indicators and top categories from the training split."""
        _require_columns(frame, self.spec.feature_columns)
        self._reset()
        for col in self.spec.features.numerical:
            values = _numeric_values(frame[col])
            finite = values[~np.isnan(values)]
            median = float(np.median(finite)) if finite.size else 0.0
            index = self._add_output(col, (col,))
            missing = self._add_output(f"{col}__missing", (col,)) if finite.size < values.size else -1
            self._numeric.append((col, median, index, missing))
        keys = {col: _column_keys(frame[col]) for col in self.spec.features.categorical}
        pii = set(self.spec.pii)
        rare = self.params.min_pii_category_count  # a PII value this rare could single a customer out
        for col in self.spec.features.categorical:
            lookup = self._fit_one_hot(col, (col,), *keys[col], min_count=rare if col in pii else 1)
            self._categorical.append((col, lookup))
        for col, edges in self._buckets.items():
            index = self._add_output(f"{col}__bucket", (col,))
            self._bucket_plan.append((col, edges.tolist(), edges, index))
        for name, (num, den) in self._ratios.items():
            self._ratio_plan.append((num, den, self._add_output(name, (num, den))))
        for name, (columns, value) in self._counts.items():
            self._count_plan.append((columns, value, self._add_output(name, columns)))
        for a, b in self._crosses:
            min_count = rare if {a, b} & pii else 1
            cross_lookup = self._fit_one_hot(
                f"{a}|{b}", (a, b), *_pair_keys(keys[a], keys[b]), min_count=min_count
            )
            self._cross_plan.append((a, b, cross_lookup))
        self.fitted = True
        return self

    def _fit_one_hot(
        self,
        prefix: str,
        sources: tuple[str, ...],
        codes: IntArray,
        keys: Sequence[K | None],
        min_count: int = 1,
    ) -> dict[K | None, int]:
        top, has_missing = _top_keys(codes, keys, self.params.max_categories, min_count)
        lookup: dict[K | None, int] = {}
        for key in top:
            label = "|".join(key) if isinstance(key, tuple) else str(key)
            lookup[key] = self._add_output(f"{prefix}={label}", sources)
        if has_missing:
            lookup[None] = self._add_output(f"{prefix}={MISSING}", sources)
        return lookup

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """A float64 matrix of shape (len(frame), n_outputs); every spec feature column is required."""
        self._check_fitted()
        _require_columns(frame, self.spec.feature_columns)
        out = np.zeros((len(frame), self.n_outputs), dtype=np.float64)
        imputed: dict[str, FloatArray] = {}
        for col, median, index, missing_index in self._numeric:
            values = _numeric_values(frame[col])
            missing = np.isnan(values)
            values[missing] = median
            out[:, index] = values
            if missing_index >= 0:
                out[:, missing_index] = missing
            imputed[col] = values
        keys = {col: _column_keys(frame[col]) for col in self.spec.features.categorical}
        for col, lookup in self._categorical:
            _scatter_ones(out, _lookup_codes(*keys[col], lookup))
        for col, _, edges, index in self._bucket_plan:
            out[:, index] = np.searchsorted(edges, imputed[col], side="right")
        for numerator, denominator, index in self._ratio_plan:
            num, den = imputed[numerator], imputed[denominator]
            with np.errstate(over="ignore"):  # overflow gives inf, as Python's float division does
                np.divide(num, den, out=out[:, index], where=den != 0.0)
        for columns, value, index in self._count_plan:
            for col in columns:
                codes, col_keys = keys[col]
                out[:, index] += np.array([k == value for k in col_keys], dtype=np.float64)[codes]
        for a, b, cross_lookup in self._cross_plan:
            _scatter_ones(out, _lookup_codes(*_pair_keys(keys[a], keys[b]), cross_lookup))
        return out

    def transform_one(self, record: Mapping[str, object], out: np.ndarray | None = None) -> np.ndarray:
        """One request's raw values as a 1-D float64 row, bit-identical to `transform`.

        Absent keys count as missing. Writes into `out` (length n_outputs) when given.
        Plain Python and dict lookups only: no pandas on the per-request path.
        """
        self._check_fitted()
        if out is None:
            row = np.zeros(self.n_outputs, dtype=np.float64)
        elif out.shape != (self.n_outputs,) or out.dtype != np.float64:
            raise ValueError(f"out must be a float64 array of shape ({self.n_outputs},), got {out.shape}")
        else:
            row = out
            row.fill(0.0)
        get = record.get
        imputed: dict[str, float] = {}
        for col, median, index, missing_index in self._numeric:
            number = to_float(get(col))
            if math.isnan(number):
                number = median
                if missing_index >= 0:
                    row[missing_index] = 1.0
            row[index] = imputed[col] = number
        keys: dict[str, CategoryKey] = {}
        for col, lookup in self._categorical:
            key = keys[col] = category_key(get(col))
            position = lookup.get(key)
            if position is not None:
                row[position] = 1.0
        self._engineered_one(row, imputed, keys)
        return row

    def _engineered_one(
        self, row: np.ndarray, imputed: dict[str, float], keys: dict[str, CategoryKey]
    ) -> None:
        for col, edges, _, index in self._bucket_plan:
            row[index] = bisect_right(edges, imputed[col])
        for numerator, denominator, index in self._ratio_plan:
            den = imputed[denominator]
            row[index] = imputed[numerator] / den if den != 0.0 else 0.0
        for columns, value, index in self._count_plan:
            row[index] = sum(keys[col] == value for col in columns)
        for a, b, lookup in self._cross_plan:
            key_a, key_b = keys[a], keys[b]
            position = lookup.get(None if key_a is None or key_b is None else (key_a, key_b))
            if position is not None:
                row[position] = 1.0

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("FeatureTransformer is not fitted: call fit() on the training split first")


def _check_edges(column: str, edges: tuple[float, ...]) -> FloatArray:
    array = np.asarray(edges, dtype=np.float64)
    if not (np.all(np.isfinite(array)) and np.all(np.diff(array) > 0)):
        raise ConfigError(f"features.buckets.{column}: edges must be finite and strictly increasing")
    return array


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(f"feature column(s) missing from the frame: {absent}")

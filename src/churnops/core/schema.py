"""Conform a raw frame to its dataset spec: keep only the spec's columns, normalise blanks and types."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from churnops.core.spec import DatasetSpec
from churnops.errors import DataError


def conform_to_spec(raw: pd.DataFrame, spec: DatasetSpec, with_target: bool = True) -> pd.DataFrame:
    """Return the spec's columns only; columns the spec does not name are dropped here and never stored.

    `with_target=False` keeps the id and features only (scoring data has no labels).

    Whitespace-only strings become missing (telco's TotalCharges uses " "), and a
    numerical column is converted to float when every non-missing value parses;
    one that does not keeps its raw values so validation reports the wrong type.
    """
    if raw.empty or len(raw.columns) == 0:
        raise DataError("input data is empty: no rows")
    wanted = spec.columns if with_target else [spec.id_column, *spec.feature_columns]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise DataError(f"column {missing[0]!r} required by spec {spec.name!r} is missing from the data")
    frame = raw.loc[:, wanted].copy()
    for column in frame.columns:
        if _is_text(frame[column]):
            frame[column] = _blank_to_missing(frame[column])
    for column in spec.features.numerical:
        frame[column] = _numeric_if_parseable(frame[column])
    frame[spec.id_column] = frame[spec.id_column].astype(str)
    return frame


def unparseable_numeric(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, object]:
    """Numerical columns still holding text after conforming, with one offending value each."""
    bad: dict[str, object] = {}
    for column in spec.features.numerical:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series):
            parsed = pd.to_numeric(series, errors="coerce")
            offenders = series[parsed.isna() & series.notna()]
            bad[column] = offenders.iloc[0] if len(offenders) else None
    return bad


def target_labels(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """0/1 labels from the raw target column using the spec's positive value."""
    column = frame[spec.target.column]
    keys, codes = _unique_keys(column)
    lookup = np.array([1 if spec.is_positive(k) else 0 for k in keys], dtype=np.int64)
    return np.asarray(lookup[codes], dtype=np.int64)


def content_hash(frame: pd.DataFrame) -> str:
    """A stable hash of a conformed frame's values and column names (lineage tag)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _is_text(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_object_dtype(series)
        or pd.api.types.is_string_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def _blank_to_missing(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.CategoricalDtype):  # look at the few categories, not every row
        blanks = [c for c in series.cat.categories if isinstance(c, str) and not c.strip()]
        return series.cat.remove_categories(blanks) if blanks else series
    as_text = series.astype("string")
    blank = as_text.str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    if not blank.any():
        return series
    out = series.astype(object).copy()
    out[blank] = np.nan
    return out


def _numeric_if_parseable(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.astype(np.float64)
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    parsed = pd.to_numeric(series, errors="coerce")
    if (parsed.isna() & series.notna()).any():
        return series
    return parsed.astype(np.float64)


def _unique_keys(column: pd.Series) -> tuple[list[object], np.ndarray]:
    codes, uniques = pd.factorize(column, use_na_sentinel=False)
    return list(uniques), np.asarray(codes)

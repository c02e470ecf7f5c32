"""Feature frames to stored rows and back: JSON values, UTC event times, point-in-time frames.

Pure conversions with no database access, shared by every offline-store backend.
Feature values become one JSON document per row (NaN/NA -> null, numpy scalars ->
Python); times become aware UTC because SQLite keeps no offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from churnops.errors import DataError

FEATURE_TIMESTAMP = "feature_timestamp"
StoredRow = tuple[str, str, datetime, str]  # (version, entity_id, event time, JSON values)
PickedRow = tuple[int, datetime | None, str | None]  # (label position, event time, JSON values)


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/NA become null, numpy scalars become Python ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value.item() if hasattr(value, "item") else value


def _json_default(value: Any) -> Any:
    """orjson fallback for the rare types it does not know (pandas Timestamp, Decimal, numpy in objects)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_ready(series: pd.Series) -> list[Any]:
    """A column as Python scalars with missing values as None, vectorised where the dtype allows."""
    if series.dtype == object:
        return [_clean(v) for v in series.tolist()]
    values: list[Any] = series.tolist()  # numpy scalars become Python ones in C
    missing = series.isna().to_numpy()
    if missing.any():
        for index in missing.nonzero()[0]:
            values[index] = None
    return values


def _utc(stamp: datetime) -> datetime:
    """Aware UTC: SQLite keeps no offset, so every backend stores UTC wall time."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _utc_column(series: pd.Series, name: str) -> list[datetime]:
    """Datetimes or ISO 8601 strings (mixed offsets allowed) as aware UTC; epochs are ambiguous, refused."""
    if pd.api.types.is_numeric_dtype(series):
        raise DataError(f"{name}: numbers are not timestamps (unit unknown): use datetimes or ISO 8601")
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
    else:
        stamps = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
    bad = int(stamps.isna().sum())
    if bad:
        raise DataError(f"{name}: {bad} row(s) without a valid timestamp")
    return list(stamps.dt.to_pydatetime())


def check_ids(frame: pd.DataFrame, id_column: str, time_column: str | None = None) -> None:
    """Refuse a frame whose id (or named event-time) column is absent, or with rows lacking an id."""
    for role, column in (("id", id_column), ("event time", time_column)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{column}: {role} column missing from the frame")
    missing = int(frame[id_column].isna().sum())
    if missing:
        raise DataError(f"{id_column}: {missing} row(s) without an id")


def feature_records(
    frame: pd.DataFrame,
    id_column: str,
    columns: list[str],
    version: str,
    event_timestamp: datetime | str,
    chunk_rows: int,
) -> Iterator[StoredRow]:
    """(version, entity_id, event time, JSON values) per row, converted a chunk at a time to bound memory."""
    for start in range(0, len(frame), chunk_rows):
        part = frame.iloc[start : start + chunk_rows]
        ids = part[id_column].astype(str).tolist()
        if isinstance(event_timestamp, str):
            stamps: Iterable[datetime] = _utc_column(part[event_timestamp], event_timestamp)
        else:
            stamps = [_utc(event_timestamp)] * len(ids)
        values = zip(*(_json_ready(part[c]) for c in columns), strict=True) if columns else [()] * len(ids)
        for entity, stamp, row in zip(ids, stamps, values, strict=True):
            document = orjson.dumps(dict(zip(columns, row, strict=True)), default=_json_default)
            yield version, entity, stamp, document.decode()


def label_rows(frame: pd.DataFrame, entity_column: str, time_column: str) -> tuple[list[str], list[datetime]]:
    """Entity ids as text and label times as aware UTC, in frame order."""
    check_ids(frame, entity_column, time_column)
    return frame[entity_column].astype(str).tolist(), _utc_column(frame[time_column], time_column)


def assemble(
    entity_times: pd.DataFrame,
    columns: Sequence[str],
    picked: Sequence[PickedRow],
) -> pd.DataFrame:
    """Label rows + time of the feature row used + feature values (missing when none qualified)."""
    base = entity_times.reset_index(drop=True)
    times = pd.Series([row[1] for row in picked], index=base.index, dtype=object, name=FEATURE_TIMESTAMP)
    documents = [orjson.loads(row[2]) if row[2] is not None else {} for row in picked]
    features = pd.DataFrame(documents, columns=list(columns), index=base.index)
    return pd.concat([base, pd.to_datetime(times, utc=True), features], axis=1)


def check_no_clash(entity_times: pd.DataFrame, columns: Sequence[str]) -> None:
    """The training frame must not already hold a column the join adds."""
    clash = sorted(set(entity_times.columns) & {FEATURE_TIMESTAMP, *columns})
    if clash:
        raise DataError(f"training_set: entity frame already has column(s) {clash}")

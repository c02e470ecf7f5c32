"""What a lifecycle cycle trains on: new labelled data (a file or a table past its watermark), or the
closed loop's own data — the ledger's labelled predictions, each joined point in time to the
offline store (the features as they were when the prediction was made; the label from feedback).

Opted-out and erased customers are left out either way (the pipeline's ingest drops them from
files; the ledger path drops their pseudonyms before the join).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from churnops.core.expectations import ReferenceProfile as ValidationReference
from churnops.core.ledger import pseudonym
from churnops.core.lifecycle_params import NewDataTrigger, seconds
from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, DataError
from churnops.io import privacy_store
from churnops.io.datasets import write_table
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.offline_store import SqlOfflineStore
from churnops.jobs.promote import Lifecycle
from churnops.jobs.validate import reference_path

logger = logging.getLogger(__name__)

WATERMARK = "watermark"


@dataclass(frozen=True)
class NewData:
    """Labelled data not trained on yet: a file, or a table's rows past the watermark."""

    label: str
    path: Path | None = None
    table: str | None = None
    mark: Any = None  # what the watermark becomes once trained on


def find_new_data(lc: Lifecycle, trigger: NewDataTrigger, base: Path) -> list[NewData]:
    """Files matching the glob that no cycle has seen (newest last), and the table if it moved on."""
    seen = (lc.state.get(WATERMARK) or {}).get("files", {})
    found: list[NewData] = []
    if trigger.glob:
        pattern = trigger.glob if Path(trigger.glob).is_absolute() else str(base / trigger.glob)
        root = Path(pattern).anchor or "/"
        settled_before = time.time() - seconds(trigger.settle)
        for path in sorted(Path(root).glob(str(Path(pattern).relative_to(root))), key=_mtime):
            mark = _fingerprint(path)
            if not path.is_file() or seen.get(str(path)) == mark:
                continue
            if _mtime(path) > settled_before:
                logger.info(
                    "new data %s changed within %s: left for a later cycle", path.name, trigger.settle
                )
                continue
            found.append(NewData(path.name, path=path, mark=mark))
    if trigger.table and trigger.watermark_column:
        table = _table_news(lc, trigger.table, trigger.watermark_column)
        if table is not None:
            found.append(table)
    return found


def mark_seen(lc: Lifecycle, items: list[NewData], conn: sa.Connection | None = None) -> None:
    state = lc.state.get(WATERMARK) or {"files": {}}
    for item in items:
        if item.path is not None:
            state.setdefault("files", {})[str(item.path)] = item.mark
        elif item.table is not None:
            state.setdefault("tables", {})[item.table] = item.mark
    lc.state.put(WATERMARK, state, conn)


def materialise(lc: Lifecycle, item: NewData, out: Path) -> Path:
    """The new data as a file the pipeline reads (a table is exported whole, as of now)."""
    if item.path is not None:
        return item.path
    table = sa.Table(str(item.table), sa.MetaData(), autoload_with=lc.sql.ready())
    with lc.sql.ready().connect() as conn:
        frame = pd.read_sql(sa.select(table), conn)
    return write_table(frame, out / f"{item.table}.parquet")


def ledger_training_data(
    lc: Lifecycle, spec: DatasetSpec, feature_set: str, since_us: int, out: Path
) -> tuple[Path, dict[str, Any]]:
    """Labelled predictions since `since_us` (served ones, the latest per customer), features from the
    offline store as of each prediction's time; opted-out and erased customers left out. Written to
    the file `out` (CSV or Parquet)."""
    labelled = FeedbackStore(LedgerStore(lc.sql)).labelled(since_us)
    labelled = labelled[labelled["role"] != "shadow"].sort_values("predicted_at_us")
    labelled = labelled.drop_duplicates("subject", keep="last")
    with lc.sql.ready().connect() as conn:
        excluded = privacy_store.opted_out(conn)
    kept = labelled[~labelled["subject"].isin(excluded)]
    offline = SqlOfflineStore(lc.settings.offline_store_url)
    try:
        ids = _ids_by_subject(offline, feature_set, lc.keys.pseudonym_key, set(kept["subject"]))
        kept = kept[kept["subject"].isin(ids)]
        times = pd.to_datetime(kept["predicted_at_us"].to_numpy(), unit="us", utc=True)
        entities = pd.DataFrame({"entity_id": [ids[s] for s in kept["subject"]], "label_timestamp": times})
        features = offline.training_set(feature_set, entities)
    finally:
        offline.close()
    present = features["feature_timestamp"].notna().to_numpy()
    frame = features.loc[present, spec.feature_columns].copy()
    frame.insert(0, spec.id_column, entities["entity_id"].to_numpy()[present])
    positive, negative = spec.target.positive, _negative_value(lc, spec)
    frame[spec.target.column] = [positive if c else negative for c in kept["churned"].to_numpy()[present]]
    if spec.timestamp_column:
        frame[spec.timestamp_column] = times[present]
    summary = {
        "labelled_customers": len(labelled),
        "opted_out_or_erased": int(labelled["subject"].isin(excluded).sum()),
        "without_offline_features": int(len(labelled) - len(frame)),
        "rows": len(frame),
        "since": datetime.fromtimestamp(since_us / 1e6, tz=UTC).isoformat(),
    }
    if len(frame) == 0:
        raise DataError("the ledger holds no labelled predictions with offline features to train on")
    return write_table(frame, out), summary


def _ids_by_subject(
    offline: SqlOfflineStore, feature_set: str, key: bytes, wanted: set[str]
) -> dict[str, str]:
    """Clear ids for pseudonyms, found by hashing the offline store's ids (the ledger holds none)."""
    found: dict[str, str] = {}
    for batch in offline.iter_latest(feature_set):
        for entity, _ in batch:
            subject = pseudonym(key, entity)
            if subject in wanted:
                found[subject] = entity
    return found


def _negative_value(lc: Lifecycle, spec: DatasetSpec) -> Any:
    """A target value meaning 'not churned' that validation knows (the champion's data had it)."""
    path = reference_path(lc.settings.home, spec.name)
    if path.is_file():
        values = ValidationReference.model_validate_json(path.read_text()).target_values
        other = [v for v in values if not spec.is_positive(v)]
        if other:
            return other[0]
    positive = spec.target.positive
    if isinstance(positive, bool):
        return not positive
    if isinstance(positive, int | float):
        return 0 if positive != 0 else 1
    raise ConfigError(f"spec {spec.name!r}: no known negative value of target {spec.target.column!r}")


def _table_news(lc: Lifecycle, name: str, column: str) -> NewData | None:
    mark = ((lc.state.get(WATERMARK) or {}).get("tables") or {}).get(name)
    table = sa.Table(name, sa.MetaData(), autoload_with=lc.sql.ready())
    if column not in table.c:
        raise ConfigError(f"lifecycle.new_data.watermark_column: table {name!r} has no column {column!r}")
    with lc.sql.ready().connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(table.c[column]))).scalar_one_or_none()
    if newest is None:
        return None
    value = newest.isoformat() if hasattr(newest, "isoformat") else newest
    if mark is not None and str(value) <= str(mark) and not isinstance(value, int | float):
        return None
    if mark is not None and isinstance(value, int | float) and value <= mark:
        return None
    return NewData(f"table {name} up to {column}={value}", table=name, mark=value)


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _mtime(path: Path) -> float:
    return path.stat().st_mtime

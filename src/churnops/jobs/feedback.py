"""Delayed churn labels: join them to the predictions they judge, idempotently, and read them back.

A label names a prediction (`prediction_id`) or a customer (`customer_id`). By customer it
labels that customer's predictions made in the label window before `observed_at`
(params.yaml `ledger.label_window_days`). The same label twice is one label; a
different label for an already labelled prediction is a conflict and changes nothing.

`labelled_predictions(settings)` is what monitoring, experiments and the lifecycle loop
read: one row per labelled prediction (pseudonym, model version, variant, experiment,
bucket, role, probability, decision, threshold, prediction time, label, label time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.core.ledger import pseudonym
from churnops.errors import Conflict, DataError, NotFound
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Label:
    """One incoming label: exactly one of prediction_id / customer_id."""

    churned: bool
    prediction_id: str | None = None
    customer_id: str | None = None
    observed_at_us: int | None = None


@dataclass
class LabelSummary:
    received: int = 0
    joined: int = 0  # predictions newly labelled
    duplicates: int = 0  # the same label again
    conflicts: int = 0  # a different label for a labelled prediction
    unmatched: int = 0  # no prediction found for the id or customer
    erased: int = 0  # the customer was erased: not joined
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "details"}


@contextmanager
def feedback_store(settings: Settings) -> Iterator[FeedbackStore]:
    if settings.sql_store_url.startswith("sqlite"):
        settings.ensure_home()
    store = SqlStore(settings.sql_store_url)
    try:
        yield FeedbackStore(LedgerStore(store))
    finally:
        store.close()


def record_labels(
    store: FeedbackStore,
    keys: Secrets,
    labels: Sequence[Label],
    *,
    window_days: int,
    source: str,
    principal: str | None,
) -> LabelSummary:
    """Join labels to predictions and store the new ones in one transaction."""
    summary = LabelSummary(received=len(labels))
    now_us = time.time_ns() // 1000
    by_id = store.subjects_of([label.prediction_id for label in labels if label.prediction_id])
    wanted: dict[str, tuple[bool, str, int]] = {}  # prediction id -> (churned, subject, observed)
    for label in labels:
        observed = label.observed_at_us or now_us
        if label.prediction_id is not None:
            found = by_id.get(label.prediction_id)
            targets = [(label.prediction_id, found[0])] if found else []
        else:
            subject = pseudonym(keys.pseudonym_key, str(label.customer_id))
            window = store.predictions_of(subject, observed - window_days * DAY_US, observed)
            targets = [(prediction_id, subject) for prediction_id, _ in window]
        if not targets:
            summary.unmatched += 1
            continue
        for prediction_id, subject in targets:
            _want(wanted, summary, prediction_id, (label.churned, subject, observed))
    erased = store.erased(subject for _, subject, _ in wanted.values())
    existing = store.existing(wanted)
    rows = []
    for prediction_id, (churned, subject, observed) in wanted.items():
        if subject in erased:
            summary.erased += 1
        elif prediction_id in existing:
            if existing[prediction_id] == churned:
                summary.duplicates += 1
            else:
                summary.conflicts += 1
                summary.details.append(
                    f"prediction {prediction_id} is already labelled churned={existing[prediction_id]}"
                )
        else:
            rows.append(_row(prediction_id, subject, churned, observed, now_us, source, principal))
    summary.joined = store.insert(rows)
    return summary


def _want(
    wanted: dict[str, tuple[bool, str, int]],
    summary: LabelSummary,
    prediction_id: str,
    label: tuple[bool, str, int],
) -> None:
    earlier = wanted.get(prediction_id)
    if earlier is None:
        wanted[prediction_id] = label
    elif earlier[0] == label[0]:
        summary.duplicates += 1
    else:
        summary.conflicts += 1
        summary.details.append(f"prediction {prediction_id} got both labels in this input")


def _row(
    prediction_id: str,
    subject: str,
    churned: bool,
    observed: int,
    now_us: int,
    source: str,
    principal: str | None,
) -> dict[str, Any]:
    return {
        "prediction_id": prediction_id,
        "subject": subject,
        "churned": churned,
        "observed_at_us": observed,
        "received_at_us": now_us,
        "source": source,
        "principal": principal,
    }


def record_one(
    store: FeedbackStore, keys: Secrets, label: Label, principal: str | None, window_days: int
) -> LabelSummary:
    """The API's single label: 404 when nothing matches, 409 on a contradiction, idempotent otherwise."""
    summary = record_labels(store, keys, [label], window_days=window_days, source="api", principal=principal)
    if summary.erased:
        raise NotFound("that customer was erased: labels are no longer joined to their predictions")
    if summary.unmatched:
        what = (
            f"prediction {label.prediction_id!r}" if label.prediction_id else "a prediction of that customer"
        )
        raise NotFound(f"no {what} in the ledger (by customer: within the label window before observed_at)")
    if summary.conflicts and not summary.joined:
        raise Conflict(summary.details[0] + "; a label is never overwritten")
    return summary


# -- label files -------------------------------------------------------------------------

TRUE_VALUES = {"1", "true", "yes", "y", "t"}
FALSE_VALUES = {"0", "false", "no", "n", "f"}


def read_label_file(path: Path, progress: Callable[[int], None] | None = None) -> list[Label]:
    """Parse a CSV/Parquet label file (prediction_id or customer_id, churned, observed_at?) fully
    before anything is stored; the first bad value is an error naming its row and column."""
    from churnops.io.datasets import read_table

    frame = read_table(path)
    id_column = next((c for c in ("prediction_id", "customer_id") if c in frame.columns), None)
    if id_column is None:
        raise DataError(
            f"{path}: needs a prediction_id or customer_id column (found: {', '.join(frame.columns)})"
        )
    if "churned" not in frame.columns:
        raise DataError(f"{path}: needs a churned column (true/false, 1/0, yes/no)")
    labels = []
    observed = frame["observed_at"] if "observed_at" in frame.columns else None
    for index, (ident, churned) in enumerate(zip(frame[id_column], frame["churned"], strict=True)):
        row = index + 2  # the header is line 1 of a CSV
        if pd.isna(ident) or not str(ident).strip():
            raise DataError(f"{path}: row {row}: {id_column} is empty")
        at = _observed(observed.iloc[index], path, row) if observed is not None else None
        labels.append(
            Label(_churned(churned, path, row), **{id_column: str(ident).strip()}, observed_at_us=at)
        )
        if progress is not None and index % 10_000 == 9_999:
            progress(10_000)
    return labels


def _churned(value: Any, path: Path | str, row: int) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text.endswith(".0"):
        text = text[:-2]
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise DataError(f"{path}: row {row}: churned must be true/false, 1/0 or yes/no, got {value!r}")


def _observed(value: Any, path: Path | str, row: int) -> int | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    try:
        return parse_time_us(value)
    except ValueError as err:
        raise DataError(f"{path}: row {row}: observed_at must be an ISO date or time, got {value!r}") from err


def parse_time_us(value: Any) -> int:
    """An ISO date/time (naive = UTC) or a pandas timestamp as epoch microseconds."""
    moment = value.to_pydatetime() if isinstance(value, pd.Timestamp) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def import_labels(
    settings: Settings, path: Path, window_days: int, progress: Callable[[int], None] | None = None
) -> LabelSummary:
    """`churnops feedback import`: the monthly label file, all or nothing."""
    labels = read_label_file(path, progress)
    with feedback_store(settings) as store:
        return record_labels(
            store, load_secrets(settings), labels, window_days=window_days, source="import", principal="cli"
        )


def labelled_predictions(
    settings: Settings, since_us: int | None = None, until_us: int | None = None
) -> pd.DataFrame:
    """Labelled predictions for monitoring, experiments and the lifecycle loop (see the module docstring)."""
    with feedback_store(settings) as store:
        return store.labelled(since_us, until_us)

"""Delayed churn labels on the SQL store: stored once per prediction, joined back to the ledger."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from churnops.io.ledger_store import LedgerStore
from churnops.io.sql_schema import feedback_labels, ledger_records, privacy_state

LABELLED_COLUMNS = (
    "prediction_id",
    "subject",
    "model_name",
    "model_version",
    "variant",
    "experiment",
    "bucket",
    "role",
    "probability",
    "decision",
    "threshold",
    "predicted_at_us",
    "churned",
    "observed_at_us",
)
SCORE_COLUMNS = (
    "model_version",
    "variant",
    "probability",
    "decision",
    "threshold",
    "predicted_at_us",
    "churned",
    "received_at_us",
)


class FeedbackStore:
    """Labels beside the ledger (the same database)."""

    def __init__(self, ledger: LedgerStore) -> None:
        self.ledger = ledger
        self.store = ledger.store

    def predictions_of(self, subject: str, after_us: int, before_us: int) -> list[tuple[str, int]]:
        """(prediction id, time) of a customer's predictions in [after, before), oldest first."""
        query = (
            sa.select(ledger_records.c.record_id, ledger_records.c.at_us)
            .where(
                ledger_records.c.subject == subject,
                ledger_records.c.kind == "prediction",
                ledger_records.c.at_us >= after_us,
                ledger_records.c.at_us < before_us,
            )
            .order_by(ledger_records.c.at_us)
        )
        with self.store.ready().connect() as conn:
            return [(str(r), int(t)) for r, t in conn.execute(query)]

    def subjects_of(self, prediction_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """prediction id -> (subject, time) for the ids that are predictions in the ledger."""
        found: dict[str, tuple[str, int]] = {}
        with self.store.ready().connect() as conn:
            for start in range(0, len(prediction_ids), 5_000):
                chunk = list(prediction_ids[start : start + 5_000])
                query = sa.select(
                    ledger_records.c.record_id, ledger_records.c.subject, ledger_records.c.at_us
                ).where(ledger_records.c.record_id.in_(chunk), ledger_records.c.kind == "prediction")
                found |= {str(r): (str(s), int(t)) for r, s, t in conn.execute(query)}
        return found

    def existing(self, prediction_ids: Iterable[str]) -> dict[str, bool]:
        """prediction id -> churned, for the ids that already have a label."""
        ids = list(prediction_ids)
        found: dict[str, bool] = {}
        with self.store.ready().connect() as conn:
            for start in range(0, len(ids), 5_000):
                query = sa.select(feedback_labels.c.prediction_id, feedback_labels.c.churned).where(
                    feedback_labels.c.prediction_id.in_(ids[start : start + 5_000])
                )
                found |= {str(p): bool(c) for p, c in conn.execute(query)}
        return found

    def erased(self, subjects: Iterable[str]) -> set[str]:
        wanted = list(set(subjects))
        if not wanted:
            return set()
        query = sa.select(privacy_state.c.subject).where(
            privacy_state.c.subject.in_(wanted), privacy_state.c.erased_at_us.is_not(None)
        )
        with self.store.ready().connect() as conn:
            return {str(s) for s in conn.execute(query).scalars()}

    def insert(self, labels: Sequence[Mapping[str, Any]]) -> int:
        """Store new labels in one transaction (a label that raced in meanwhile is kept, not doubled)."""
        if not labels:
            return 0
        statement = self.store.backend.insert_ignoring_duplicates(feedback_labels)
        with self.store.ready().begin() as conn:
            for start in range(0, len(labels), 5_000):
                conn.execute(statement, [dict(label) for label in labels[start : start + 5_000]])
        return len(labels)

    def labels_of(self, subject: str) -> list[dict[str, Any]]:
        query = sa.select(feedback_labels).where(feedback_labels.c.subject == subject)
        with self.store.ready().connect() as conn:
            return [{str(k): v for k, v in row.items()} for row in conn.execute(query).mappings()]

    def labelled(self, since_us: int | None = None, until_us: int | None = None) -> pd.DataFrame:
        """Every labelled prediction (served and shadow) in [since, until), one row each."""
        r, f = ledger_records.c, feedback_labels.c
        query = (
            sa.select(
                r.record_id,
                r.subject,
                r.model_name,
                r.model_version,
                r.variant,
                r.experiment,
                r.bucket,
                r.role,
                r.probability,
                r.decision,
                r.threshold,
                r.at_us,
                f.churned,
                f.observed_at_us,
            )
            .select_from(ledger_records.join(feedback_labels, f.prediction_id == r.record_id))
            .where(r.kind == "prediction")
            .order_by(r.at_us)
        )
        if since_us is not None:
            query = query.where(r.at_us >= since_us)
        if until_us is not None:
            query = query.where(r.at_us < until_us)
        with self.store.ready().connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(row) for row in rows], columns=list(LABELLED_COLUMNS))

    def scores(
        self,
        since_us: int | None = None,
        until_us: int | None = None,
        *,
        latest: int | None = None,
        chunk_rows: int = 50_000,
    ) -> Iterator[pd.DataFrame]:
        """Every prediction (served and shadow) in [since, until), labelled or not, in chunks of
        `chunk_rows`: the columns of SCORE_COLUMNS, `churned`/`received_at_us` null while no label
        has arrived. Oldest first; with `latest`, only the newest `latest` predictions (newest first).

        Estimated performance needs every prediction of a cohort, not only the labelled ones, so
        this is a LEFT JOIN streamed from the server: memory stays bounded by one chunk.
        """
        r, f = ledger_records.c, feedback_labels.c
        query = (
            sa.select(
                r.model_version,
                r.variant,
                r.probability,
                r.decision,
                r.threshold,
                r.at_us,
                f.churned,
                f.received_at_us,
            )
            .select_from(ledger_records.outerjoin(feedback_labels, f.prediction_id == r.record_id))
            .where(r.kind == "prediction")
        )
        if since_us is not None:
            query = query.where(r.at_us >= since_us)
        if until_us is not None:
            query = query.where(r.at_us < until_us)
        query = (
            query.order_by(r.at_us.desc()).limit(latest) if latest is not None else query.order_by(r.at_us)
        )
        with self.store.ready().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
            for chunk in result.partitions():
                yield pd.DataFrame([tuple(row) for row in chunk], columns=list(SCORE_COLUMNS))

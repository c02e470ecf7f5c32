"""The ledger's SQL adapter: append records, wrapped data keys and checkpoints; read chains back.

Appends are the only writes (the tables are append-only). The writer's normal path is a
bulk load (COPY on PostgreSQL); replaying the spool after an outage uses
INSERT ... ON CONFLICT DO NOTHING, so a batch whose commit was lost in the outage is
not stored twice (idempotent on `record_id`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from churnops.core.ledger import FIELDS
from churnops.io.sql_backends import PoolLimits
from churnops.io.sql_schema import customer_keys, ledger_checkpoints, ledger_records, privacy_state
from churnops.io.sql_store import SqlStore

Row = Sequence[Any]  # one ledger record, values in FIELDS order


def writer_limits() -> PoolLimits:
    """The background writer's pool: small, with timeouts short enough to fail over to the spool."""
    # No pre-ping: 25 round trips a second on the serving core; a dead connection fails its batch,
    # which goes to the spool and is replayed on the next connection (SQLAlchemy drops the dead one).
    return PoolLimits(
        pool_size=2,
        max_overflow=1,
        pool_timeout_s=1.0,
        connect_timeout_s=2,
        statement_timeout_ms=3_000,
        pre_ping=False,
    )


class LedgerStore:
    """Ledger tables on the SQL store (SQLite embedded, PostgreSQL in production)."""

    def __init__(self, store: SqlStore, chunk_rows: int = 20_000) -> None:
        self.store = store
        self.chunk_rows = chunk_rows

    # -- writes ----------------------------------------------------------------------

    def append(
        self,
        records: Sequence[Row],
        keys: Sequence[Mapping[str, Any]] = (),
        checkpoints: Sequence[Mapping[str, Any]] = (),
        *,
        idempotent: bool = False,
    ) -> None:
        """Store one batch in one transaction: data keys first, then records, then checkpoints."""
        with self.store.ready().begin() as conn:
            if keys:
                self.store.backend.insert_keys(conn, [dict(k) for k in keys])
            if records:
                if idempotent:
                    self._insert_ignoring(
                        conn, ledger_records, [dict(zip(FIELDS, r, strict=True)) for r in records]
                    )
                else:
                    self.store.backend.bulk_insert(
                        conn, ledger_records, FIELDS, records, self.chunk_rows, binary=True
                    )
            if checkpoints:
                self._insert_ignoring(conn, ledger_checkpoints, [dict(c) for c in checkpoints])

    def _insert_ignoring(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        statement = self.store.backend.insert_ignoring_duplicates(table)
        for start in range(0, len(rows), self.chunk_rows):
            conn.execute(statement, rows[start : start + self.chunk_rows])

    # -- reads -----------------------------------------------------------------------

    def writers(self) -> list[str]:
        """Every writer with a record or a checkpoint."""
        query = sa.union(sa.select(ledger_records.c.writer_id), sa.select(ledger_checkpoints.c.writer_id))
        with self.store.ready().connect() as conn:
            return sorted(str(w) for w in conn.execute(query).scalars())

    def chain(self, writer_id: str, batch_size: int = 10_000) -> Iterator[dict[str, Any]]:
        """One writer's records in seq order, streamed."""
        query = (
            sa.select(*(ledger_records.c[name] for name in FIELDS))
            .where(ledger_records.c.writer_id == writer_id)
            .order_by(ledger_records.c.seq)
        )
        with self.store.ready().connect() as conn:
            result = conn.execution_options(yield_per=batch_size).execute(query)
            for part in result.partitions():
                yield from (dict(zip(FIELDS, row, strict=True)) for row in part)

    def checkpoints(self, writer_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(ledger_checkpoints)
            .where(ledger_checkpoints.c.writer_id == writer_id)
            .order_by(ledger_checkpoints.c.seq)
        )
        with self.store.ready().connect() as conn:
            return [{str(k): v for k, v in row.items()} for row in conn.execute(query).mappings()]

    def counts(self) -> dict[str, Any]:
        """Records by kind, writers, checkpoints, time span."""
        records = ledger_records.c
        with self.store.ready().connect() as conn:
            kinds = sa.select(records.kind, sa.func.count()).group_by(records.kind)
            by_kind: dict[str, int] = {str(k): int(v) for k, v in conn.execute(kinds)}
            span = conn.execute(sa.select(sa.func.min(records.at_us), sa.func.max(records.at_us))).one()
            checkpoints = conn.execute(
                sa.select(sa.func.count()).select_from(ledger_checkpoints)
            ).scalar_one()
            writers = conn.execute(sa.select(sa.func.count(sa.distinct(records.writer_id)))).scalar_one()
        return {
            "records": int(sum(by_kind.values())),
            "by_kind": by_kind,
            "writers": int(writers),
            "checkpoints": int(checkpoints),
            "first_at_us": span[0],
            "last_at_us": span[1],
        }

    def records(
        self,
        *,
        subject: str | None = None,
        since_us: int | None = None,
        kind: str | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[dict[str, Any]]:
        """Records by customer pseudonym and/or time, oldest first, streamed."""
        query = sa.select(*(ledger_records.c[name] for name in FIELDS)).order_by(
            ledger_records.c.at_us, ledger_records.c.record_id
        )
        if subject is not None:
            query = query.where(ledger_records.c.subject == subject)
        if since_us is not None:
            query = query.where(ledger_records.c.at_us >= since_us)
        if kind is not None:
            query = query.where(ledger_records.c.kind == kind)
        with self.store.ready().connect() as conn:
            result = conn.execution_options(yield_per=batch_size).execute(query)
            for part in result.partitions():
                yield from (dict(zip(FIELDS, row, strict=True)) for row in part)

    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        query = sa.select(*(ledger_records.c[name] for name in FIELDS)).where(
            ledger_records.c.record_id == prediction_id, ledger_records.c.kind == "prediction"
        )
        with self.store.ready().connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else dict(zip(FIELDS, row, strict=True))

    def data_keys(self, subject: str) -> dict[tuple[int, str], bytes]:
        """A customer's wrapped data keys by (epoch, writer); empty once erased."""
        query = sa.select(customer_keys.c.epoch, customer_keys.c.writer_id, customer_keys.c.wrapped).where(
            customer_keys.c.subject == subject
        )
        with self.store.ready().connect() as conn:
            return {(int(e), str(w)): bytes(k) for e, w, k in conn.execute(query)}

    def privacy(self, subject: str) -> dict[str, Any] | None:
        query = sa.select(privacy_state).where(privacy_state.c.subject == subject)
        with self.store.ready().connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return None if row is None else {str(k): v for k, v in row.items()}

"""Monitoring on the SQL store: reference profiles, drift counts and usage per worker interval, reports.

Every service worker appends, each flush interval (a few seconds), one `monitor_drift` row per
live slot (its accumulator's counts since the last flush, in the profile's layout) and one
`monitor_usage` row (its measured CPU and memory). A window is a sum over rows, so windows
merge across workers and replicas by construction; rows of different profiles (fingerprints)
are never summed together. Reads stream newest first, so "the last N predictions" stops as
soon as it has them, and `rollup` folds old rows into one row per slot and hour so that long
windows stay cheap (every worker runs it hourly; concurrent runs are serialised).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from churnops.io.sql_backends import PoolLimits
from churnops.io.sql_schema import monitor_drift, monitor_profiles, monitor_reports, monitor_usage
from churnops.io.sql_store import SqlStore

HOUR_US = 3_600_000_000
ROLLUP_WORKER = "rollup"
_STREAM_ROWS = 2_000


def monitor_limits() -> PoolLimits:
    """The monitoring task's pool: small, short timeouts (a slow database must not pile flushes up)."""
    return PoolLimits(
        pool_size=2, max_overflow=1, pool_timeout_s=2.0, connect_timeout_s=2, statement_timeout_ms=10_000
    )


@dataclass(frozen=True)
class DriftRow:
    """The counts of one live slot (model version x variant) in one worker's interval."""

    model_name: str
    model_version: str
    variant: str
    fingerprint: str | None  # None: the version has no reference profile (only `n` is counted)
    worker_id: str
    start_us: int
    end_us: int
    n: int
    counts: bytes | None


@dataclass(frozen=True)
class SlotSeen:
    """A slot that flushed counts: which variant served which version under which profile, and when."""

    variant: str
    model_name: str
    model_version: str
    fingerprint: str | None
    last_end_us: int
    n: int


@dataclass(frozen=True)
class UsageRow:
    worker_id: str
    start_us: int
    end_us: int
    predictions: int
    usage: dict[str, Any]  # WorkerUsage.to_dict()


class MonitorStore:
    """Monitoring tables on the SQL store (SQLite embedded, PostgreSQL in production)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    @classmethod
    def open(cls, url: str, limits: PoolLimits | None = None) -> MonitorStore:
        return cls(SqlStore(url, limits or monitor_limits()))

    def close(self) -> None:
        self.store.close()

    # -- profiles -------------------------------------------------------------------

    def save_profile(self, fingerprint: str, model_name: str, version: str, profile: dict[str, Any]) -> None:
        """Store a reference profile under its fingerprint (a second save of the same one is a no-op)."""
        row = {
            "fingerprint": fingerprint,
            "model_name": model_name,
            "model_version": version,
            "profile": json.dumps(profile, sort_keys=True, separators=(",", ":")),
            "created_at_us": time.time_ns() // 1000,
        }
        statement = self.store.backend.insert_ignoring_duplicates(monitor_profiles)
        with self.store.ready().begin() as conn:
            conn.execute(statement, [row])

    def profile(self, fingerprint: str) -> dict[str, Any] | None:
        query = sa.select(monitor_profiles.c.profile).where(monitor_profiles.c.fingerprint == fingerprint)
        with self.store.ready().connect() as conn:
            text = conn.execute(query).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))

    # -- the service's flushes ------------------------------------------------------------

    def append(self, drift: Sequence[DriftRow], usage: UsageRow | None) -> None:
        """One worker's flush, in one transaction."""
        if not drift and usage is None:
            return
        with self.store.ready().begin() as conn:
            if drift:
                conn.execute(monitor_drift.insert(), [row.__dict__ for row in drift])
            if usage is not None:
                conn.execute(
                    monitor_usage.insert(),
                    [
                        {
                            "worker_id": usage.worker_id,
                            "start_us": usage.start_us,
                            "end_us": usage.end_us,
                            "predictions": usage.predictions,
                            "usage": json.dumps(usage.usage, separators=(",", ":")),
                        }
                    ],
                )

    # -- reads ------------------------------------------------------------------------

    def slots(self, since_us: int | None = None) -> list[SlotSeen]:
        """Every (variant, model version, fingerprint) with rows ending after `since_us`, newest first."""
        c = monitor_drift.c
        query = sa.select(
            c.variant, c.model_name, c.model_version, c.fingerprint, sa.func.max(c.end_us), sa.func.sum(c.n)
        ).group_by(c.variant, c.model_name, c.model_version, c.fingerprint)
        if since_us is not None:
            query = query.where(c.end_us > since_us)
        with self.store.ready().connect() as conn:
            rows = conn.execute(query).all()
        seen = [SlotSeen(str(v), str(m), str(ver), f, int(end), int(n)) for v, m, ver, f, end, n in rows]
        return sorted(seen, key=lambda s: -s.last_end_us)

    def drift_rows(self, slot: SlotSeen, since_us: int | None = None) -> Generator[DriftRow, None, None]:
        """One slot's rows newest first (ending after `since_us` when given), streamed: stop any time."""
        c = monitor_drift.c
        same = c.fingerprint.is_(None) if slot.fingerprint is None else c.fingerprint == slot.fingerprint
        query = (
            sa.select(monitor_drift)
            .where(c.variant == slot.variant, c.model_name == slot.model_name)
            .where(c.model_version == slot.model_version, same)
            .order_by(c.end_us.desc(), c.id.desc())
        )
        if since_us is not None:
            query = query.where(c.end_us > since_us)
        with self.store.ready().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=_STREAM_ROWS).execute(query)
            for row in result.mappings():
                yield DriftRow(
                    str(row["model_name"]),
                    str(row["model_version"]),
                    str(row["variant"]),
                    row["fingerprint"],
                    str(row["worker_id"]),
                    int(row["start_us"]),
                    int(row["end_us"]),
                    int(row["n"]),
                    bytes(row["counts"]) if row["counts"] is not None else None,
                )

    def usage_rows(
        self, since_us: int | None = None, until_us: int | None = None
    ) -> Generator[UsageRow, None, None]:
        """Usage rows newest first, streamed."""
        c = monitor_usage.c
        query = sa.select(monitor_usage).order_by(c.end_us.desc(), c.id.desc())
        if since_us is not None:
            query = query.where(c.end_us > since_us)
        if until_us is not None:
            query = query.where(c.end_us <= until_us)
        with self.store.ready().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=_STREAM_ROWS).execute(query)
            for row in result.mappings():
                yield UsageRow(
                    str(row["worker_id"]),
                    int(row["start_us"]),
                    int(row["end_us"]),
                    int(row["predictions"]),
                    dict(json.loads(row["usage"])),
                )

    # -- reports ---------------------------------------------------------------------

    def write_report(self, kind: str, status: str, body: dict[str, Any], at_us: int | None = None) -> None:
        row = {
            "kind": kind,
            "at_us": at_us if at_us is not None else time.time_ns() // 1000,
            "status": status,
            "body": json.dumps(body, separators=(",", ":"), default=str),
        }
        with self.store.ready().begin() as conn:
            conn.execute(monitor_reports.insert(), [row])

    def reports(self, kind: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest reports of one kind, newest first: {at_us, status, body}."""
        c = monitor_reports.c
        query = (
            sa.select(c.at_us, c.status, c.body).where(c.kind == kind).order_by(c.at_us.desc()).limit(limit)
        )
        with self.store.ready().connect() as conn:
            rows = conn.execute(query).all()
        return [{"at_us": int(a), "status": str(s), "body": json.loads(b)} for a, s, b in rows]

    # -- housekeeping ---------------------------------------------------------------------

    def purge(self, before_us: int) -> int:
        """Delete drift, usage and report rows that ended before `before_us`; returns rows deleted."""
        deleted = 0
        with self.store.ready().begin() as conn:
            for table, column in (
                (monitor_drift, monitor_drift.c.end_us),
                (monitor_usage, monitor_usage.c.end_us),
                (monitor_reports, monitor_reports.c.at_us),
            ):
                deleted += conn.execute(table.delete().where(column < before_us)).rowcount or 0
        return deleted

    def rollup(self, before_us: int, merge: Any) -> int:
        """Fold drift rows that ended before `before_us` into one row per slot, fingerprint and hour.

        `merge(list_of_count_bytes) -> bytes` sums counts vectors (the caller knows the layout).
        One transaction: rows are read, replaced and deleted together, so a crash leaves either
        the old rows or the new ones; concurrent roll-ups are serialised (any worker may run one).
        """
        c = monitor_drift.c
        with self.store.ready().begin() as conn:
            # One roll-up at a time across processes (every worker may run one): the second waits,
            # then finds the rows already folded.
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(0x6D6F6E72)))  # "monr"
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            query = sa.select(monitor_drift).where(c.end_us < before_us, c.worker_id != ROLLUP_WORKER)
            groups: dict[tuple[Any, ...], list[Any]] = {}
            ids: list[int] = []
            for row in conn.execute(query).mappings():
                hour = int(row["start_us"]) // HOUR_US * HOUR_US
                key = (row["model_name"], row["model_version"], row["variant"], row["fingerprint"], hour)
                groups.setdefault(key, []).append(row)
                ids.append(int(row["id"]))
            if not ids:
                return 0
            merged = [_merged_row(key, rows, merge) for key, rows in groups.items()]
            conn.execute(monitor_drift.insert(), merged)
            for start in range(0, len(ids), 5_000):
                conn.execute(monitor_drift.delete().where(c.id.in_(ids[start : start + 5_000])))
        return len(ids)


def _merged_row(key: tuple[Any, ...], rows: list[Any], merge: Any) -> dict[str, Any]:
    model_name, version, variant, fingerprint, _hour = key
    counts = [bytes(r["counts"]) for r in rows if r["counts"] is not None]
    return {
        "model_name": model_name,
        "model_version": version,
        "variant": variant,
        "fingerprint": fingerprint,
        "worker_id": ROLLUP_WORKER,
        "start_us": min(int(r["start_us"]) for r in rows),
        "end_us": max(int(r["end_us"]) for r in rows),
        "n": sum(int(r["n"]) for r in rows),
        "counts": merge(counts) if counts else None,
    }

"""The lifecycle loop's state and its one-cycle-at-a-time lease.

State: a few JSON documents by name in `lifecycle_state` (the bake under way, the data already
trained on, the last cycle), written in the caller's transaction when they belong to an action.

Lease: PostgreSQL holds a session advisory lock on a connection kept for the whole cycle (a
watcher that dies loses it with its session); embedded, an exclusive `flock` on a file beside
the SQLite database (released by the kernel when the process exits). Both are non-blocking: a
second watcher skips its turn instead of queueing a duplicate cycle.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from churnops.io.sql_schema import customer_keys, ledger_records, lifecycle_state
from churnops.io.sql_store import SqlStore

_PG_LEASE_KEY = 0x63686C63  # "chlc": any constant, the same in every process


class LifecycleStore:
    """Named JSON documents; `put` and `delete` run in a transaction of their own or in `conn`."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def get(self, name: str) -> dict[str, Any] | None:
        query = sa.select(lifecycle_state.c.value).where(lifecycle_state.c.name == name)
        with self.store.ready().connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        return None if value is None else dict(orjson.loads(value))

    def all(self) -> dict[str, dict[str, Any]]:
        with self.store.ready().connect() as conn:
            rows = conn.execute(sa.select(lifecycle_state.c.name, lifecycle_state.c.value)).all()
        return {str(name): dict(orjson.loads(value)) for name, value in rows}

    def put(self, name: str, value: Mapping[str, Any], conn: sa.Connection | None = None) -> None:
        if conn is None:
            with self.store.ready().begin() as own:
                self.put(name, value, own)
            return
        conn.execute(lifecycle_state.delete().where(lifecycle_state.c.name == name))
        row = {
            "name": name,
            "value": orjson.dumps(dict(value)).decode(),
            "updated_at_us": time.time_ns() // 1000,
        }
        conn.execute(lifecycle_state.insert().values(row))

    def delete(self, name: str, conn: sa.Connection | None = None) -> None:
        if conn is None:
            with self.store.ready().begin() as own:
                self.delete(name, own)
            return
        conn.execute(lifecycle_state.delete().where(lifecycle_state.c.name == name))


class CycleLease:
    """At most one lifecycle cycle at a time per SQL store: `acquire()` is True for the one holder."""

    def __init__(self, store: SqlStore, lock_dir: Path) -> None:
        self.store = store
        self.lock_path = lock_dir / "lifecycle.lock"
        self._conn: sa.Connection | None = None
        self._fd: int | None = None

    @property
    def kind(self) -> str:
        return (
            "postgresql advisory lock"
            if self.store.backend.name == "postgresql"
            else f"file lock {self.lock_path}"
        )

    def acquire(self) -> bool:
        if self.store.backend.name == "postgresql":
            conn = self.store.ready().connect()
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(_PG_LEASE_KEY))).scalar_one())
            conn.commit()
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.select(sa.func.pg_advisory_unlock(_PG_LEASE_KEY)))
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lifecycle_events(
    store: SqlStore, prefixes: tuple[str, ...] = ("models.", "lifecycle."), limit: int | None = None
) -> list[dict[str, Any]]:
    """Model and lifecycle events from the ledger, newest first: id, time, action, principal, details."""
    r = ledger_records.c
    query = (
        sa.select(r.record_id, r.at_us, r.action, r.principal, r.details)
        .where(r.kind == "event", sa.or_(*(r.action.startswith(p) for p in prefixes)))
        .order_by(r.at_us.desc(), r.record_id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    with store.ready().connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "event_id": str(event_id),
            "at_us": int(at_us),
            "action": str(action),
            "principal": principal,
            "details": dict(orjson.loads(details or "{}")),
        }
        for event_id, at_us, action, principal, details in rows
    ]


def served_predictions(
    store: SqlStore, model: str, version: str, since_us: int, limit: int = 20_000, *, shadow: bool = False
) -> list[dict[str, Any]]:
    """The newest predictions a version answered since `since_us` (served, not shadow; or with
    `shadow` only its shadow scores), newest first: what the bake, the drift trigger and a shadow
    trial judge. Sealed payloads stay sealed here."""
    r = ledger_records.c
    role = r.role == "shadow" if shadow else sa.or_(r.role.is_(None), r.role != "shadow")
    query = (
        sa.select(r.record_id, r.at_us, r.subject, r.writer_id, r.key_epoch, r.payload, r.probability)
        .where(
            r.kind == "prediction",
            r.at_us >= since_us,
            r.model_name == model,
            r.model_version == version,
            role,
        )
        .order_by(r.at_us.desc())
        .limit(limit)
    )
    with store.ready().connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def wrapped_keys(store: SqlStore, subjects: list[str]) -> dict[tuple[str, int, str], bytes]:
    """(subject, epoch, writer) -> wrapped data key, for the subjects that still have keys."""
    found: dict[tuple[str, int, str], bytes] = {}
    k = customer_keys.c
    with store.ready().connect() as conn:
        for start in range(0, len(subjects), 5_000):
            chunk = subjects[start : start + 5_000]
            query = sa.select(k.subject, k.epoch, k.writer_id, k.wrapped).where(k.subject.in_(chunk))
            found |= {(str(s), int(e), str(w)): bytes(x) for s, e, w, x in conn.execute(query)}
    return found

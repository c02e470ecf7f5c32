"""Privacy actions on the SQL store, each run inside the transaction that records its event.

Erasure deletes the customer's wrapped data keys (their ledger payloads become
unreadable: crypto-shredding), their offline feature rows, and marks the pseudonym
erased; retention deletes whole past key periods. The ledger rows themselves are never
touched (append-only).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import sqlalchemy as sa

from churnops.io.sql_backends import Backend
from churnops.io.sql_schema import change_log, customer_keys, feature_rows, privacy_state


def _now_us() -> int:
    return time.time_ns() // 1000


def _mark(conn: sa.Connection, backend: Backend, subject: str, column: str, at_us: int) -> None:
    conn.execute(backend.insert_ignoring_duplicates(privacy_state).values(subject=subject))
    conn.execute(privacy_state.update().where(privacy_state.c.subject == subject).values({column: at_us}))


def publish_in(conn: sa.Connection, topic: str, payload: dict[str, Any]) -> int:
    """A change-feed row inside the caller's transaction: followers see it only if the action commits."""
    row = {"topic": topic, "payload": orjson.dumps(payload).decode(), "at_us": _now_us()}
    key = conn.execute(change_log.insert().values(row)).inserted_primary_key
    return int(key[0]) if key is not None else 0


def erase(conn: sa.Connection, backend: Backend, subject: str, customer_id: str) -> dict[str, int]:
    """Shred the customer's keys, delete their offline rows, mark them erased, tell every worker."""
    at_us = _now_us()
    keys = conn.execute(customer_keys.delete().where(customer_keys.c.subject == subject)).rowcount
    rows = conn.execute(feature_rows.delete().where(feature_rows.c.entity_id == customer_id)).rowcount
    _mark(conn, backend, subject, "erased_at_us", at_us)
    change = publish_in(conn, "privacy", {"action": "erase", "subject": subject})
    return {"data_keys_destroyed": int(keys), "offline_rows_deleted": int(rows), "change_id": change}


def opt_out(conn: sa.Connection, backend: Backend, subject: str) -> dict[str, int]:
    _mark(conn, backend, subject, "opted_out_at_us", _now_us())
    return {"change_id": publish_in(conn, "privacy", {"action": "opt-out", "subject": subject})}


def purge_before(conn: sa.Connection, epoch: int) -> int:
    """Destroy every data key of the periods before `epoch`; returns the keys destroyed."""
    return int(conn.execute(customer_keys.delete().where(customer_keys.c.epoch < epoch)).rowcount)


def opted_out(conn: sa.Connection) -> set[str]:
    """Pseudonyms that opted out of training or were erased (both stay out of training sets)."""
    query = sa.select(privacy_state.c.subject).where(
        sa.or_(privacy_state.c.opted_out_at_us.is_not(None), privacy_state.c.erased_at_us.is_not(None))
    )
    return {str(s) for s in conn.execute(query).scalars()}


def offline_rows(conn: sa.Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = feature_rows.c
    query = (
        sa.select(rows.feature_set_version, rows.event_timestamp, rows["values"])
        .where(rows.entity_id == customer_id)
        .order_by(rows.event_timestamp)
    )
    return [
        {"feature_set_version": v, "event_timestamp": str(t), "values": orjson.loads(values)}
        for v, t, values in conn.execute(query)
    ]

"""GDPR/CCPA requests: access (Art. 15), erasure (Art. 17), opt-out of training, retention purge.

Each action is first a ledger event (who, when, which pseudonym) written in the same
transaction as the action's own SQL, so an action whose event cannot be stored is not
carried out. Erasure reaches every serving worker and replica through the change feed
(their in-process copies are dropped within 2 s) and Redis directly.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from churnops.core import envelope
from churnops.core.ledger import EVENT, PREDICTION
from churnops.errors import InvalidRequest, NotFound
from churnops.io import privacy_store
from churnops.io.event_log import EventLog
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_schema import feature_sets
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings

logger = logging.getLogger(__name__)

DAY_US = 86_400_000_000
DataKeys = dict[tuple[int, str], bytes]  # (key period, writer) -> wrapped data key


def cli_principal() -> str:
    """Who runs a CLI action (the operator's login, recorded with the event)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@dataclass
class Privacy:
    """The stores and keys a privacy request needs, opened once."""

    settings: Settings
    sql: SqlStore
    ledger: LedgerStore
    feedback: FeedbackStore
    events: EventLog
    keys: Secrets

    def subject(self, customer_id: str) -> str:
        if not customer_id or len(customer_id) > 128:
            raise InvalidRequest("customer id: must be 1 to 128 characters", "customer_id")
        return self.events.subject(customer_id)


@contextmanager
def open_privacy(settings: Settings, keys: Secrets | None = None, epoch_days: int = 7) -> Iterator[Privacy]:
    if settings.sql_store_url.startswith("sqlite"):
        settings.ensure_home()
    sql = SqlStore(settings.sql_store_url)
    keys = keys or load_secrets(settings)
    ledger = LedgerStore(sql)
    try:
        yield Privacy(settings, sql, ledger, FeedbackStore(ledger), EventLog(ledger, keys, epoch_days), keys)
    finally:
        sql.close()


def export_customer(privacy: Privacy, customer_id: str) -> dict[str, Any]:
    """Everything held on one customer, decrypted where the key still exists; 404 when nothing is."""
    subject = privacy.subject(customer_id)
    state = privacy.ledger.privacy(subject) or {}
    records = list(privacy.ledger.records(subject=subject))
    with privacy.sql.ready().connect() as conn:
        offline = privacy_store.offline_rows(conn, customer_id)
    online = _online_vectors(privacy, customer_id)
    labels = privacy.feedback.labels_of(subject)
    events = [_event(r) for r in records if r["kind"] == EVENT]
    predictions = [r for r in records if r["kind"] == PREDICTION]
    data_keys = privacy.ledger.data_keys(subject)
    if state.get("erased_at_us") is not None:
        return {
            "customer_id": customer_id,
            "subject": subject,
            "erased": True,
            "erased_at": _iso(state["erased_at_us"]),
            "tombstone": next((e for e in reversed(events) if e["action"] == "privacy.erase"), None),
            "retained": {
                "prediction_records": len(predictions),
                "labels": len(labels),
                "note": "pseudonymised audit records; their feature payloads are unreadable (keys destroyed)",
            },
        }
    if not (records or offline or online or labels or state):
        raise NotFound(f"no data is held on customer {customer_id!r}")
    return {
        "customer_id": customer_id,
        "subject": subject,
        "erased": False,
        "opted_out": state.get("opted_out_at_us") is not None,
        "opted_out_at": _iso(state["opted_out_at_us"]) if state.get("opted_out_at_us") else None,
        "offline_features": offline,
        "online_features": online,
        "online_store": _online_store_note(privacy),
        "predictions": [_prediction(privacy, r, data_keys) for r in predictions],
        "labels": [
            {
                "prediction_id": label["prediction_id"],
                "churned": label["churned"],
                "observed_at": _iso(label["observed_at_us"]),
                "source": label["source"],
            }
            for label in labels
        ],
        "events": events,
    }


def erase_customer(privacy: Privacy, customer_id: str, principal: str | None) -> dict[str, Any]:
    """Crypto-shred, delete offline rows and online vectors, tombstone; every worker follows."""
    subject = privacy.subject(customer_id)
    state = privacy.ledger.privacy(subject) or {}
    if state.get("erased_at_us") is not None:
        return {"subject": subject, "already_erased": True, "erased_at": _iso(state["erased_at_us"])}
    if not _holds_anything(privacy, subject, customer_id):
        raise NotFound(f"no data is held on customer {customer_id!r}: nothing to erase")
    backend = privacy.sql.backend
    event_id, done = privacy.events.append(
        "privacy.erase",
        {"request": "GDPR Art. 17 / CCPA deletion"},
        principal,
        subject=subject,
        then=lambda conn: privacy_store.erase(conn, backend, subject, customer_id),
    )
    privacy.events.sealer.forget(subject)
    online = _delete_online(privacy, customer_id)
    _ring(privacy, int(done["change_id"]))
    logger.info("erased subject %s (event %s)", subject, event_id)
    return {"subject": subject, "event_id": event_id, "online_vectors_deleted": online, **done}


def opt_out_customer(privacy: Privacy, customer_id: str, principal: str | None) -> dict[str, Any]:
    """CCPA opt-out: left out of every later training set (the pipeline says how many it dropped)."""
    subject = privacy.subject(customer_id)
    backend = privacy.sql.backend
    event_id, done = privacy.events.append(
        "privacy.opt_out",
        {"request": "CCPA opt-out of training"},
        principal,
        subject=subject,
        then=lambda conn: privacy_store.opt_out(conn, backend, subject),
    )
    _ring(privacy, int(done["change_id"]))
    return {"subject": subject, "event_id": event_id, "opted_out": True}


def purge(privacy: Privacy, older_than_days: int, epoch_days: int, principal: str | None) -> dict[str, Any]:
    """Shred every payload in key periods that ended more than `older_than_days` ago."""
    if older_than_days < 1:
        raise InvalidRequest("--older-than-days: must be at least 1", "older_than_days")
    cutoff_us = time.time_ns() // 1000 - older_than_days * DAY_US
    epoch = cutoff_us // (epoch_days * DAY_US)  # periods before this one ended before the cutoff
    event_id, destroyed = privacy.events.append(
        "privacy.purge",
        {"older_than_days": older_than_days, "before_epoch": int(epoch), "epoch_days": epoch_days},
        principal,
        then=lambda conn: privacy_store.purge_before(conn, int(epoch)),
    )
    return {
        "event_id": event_id,
        "data_keys_destroyed": destroyed,
        "before": _iso(epoch * epoch_days * DAY_US),
    }


def excluded_subjects(settings: Settings) -> set[str]:
    """Pseudonyms to leave out of training sets (opted out or erased)."""
    sql = SqlStore(settings.sql_store_url)
    try:
        with sql.ready().connect() as conn:
            return privacy_store.opted_out(conn)
    finally:
        sql.close()


# -- helpers -------------------------------------------------------------------------------


def _holds_anything(privacy: Privacy, subject: str, customer_id: str) -> bool:
    if next(privacy.ledger.records(subject=subject), None) is not None:
        return True
    with privacy.sql.ready().connect() as conn:
        if privacy_store.offline_rows(conn, customer_id):
            return True
    return bool(_online_vectors(privacy, customer_id) or privacy.feedback.labels_of(subject))


def _feature_set_versions(privacy: Privacy) -> list[str]:
    with privacy.sql.ready().connect() as conn:
        return [str(v) for v in conn.execute(sa.select(feature_sets.c.version)).scalars()]


def _online_store_note(privacy: Privacy) -> str:
    """Where the online copy lives, so an empty `online_features` is not read as "none held"."""
    if privacy.settings.shared_redis_url is None:
        return "embedded: each server holds an in-process copy of the offline rows above"
    return "redis: the vectors in online_features, by feature-set version"


def _online_vectors(privacy: Privacy, customer_id: str) -> dict[str, Any]:
    """Redis copies by feature-set version; embedded serving copies the offline store (shown above)."""
    url = privacy.settings.shared_redis_url
    if url is None:
        return {}
    from churnops.io.online_store import RedisOnlineStore

    found: dict[str, Any] = {}
    for version in _feature_set_versions(privacy):
        store = RedisOnlineStore(url, version, socket_timeout=2.0)
        try:
            vector = store.get(customer_id)
        finally:
            store.close()
        if vector is not None:
            found[version] = vector
    return found


def _delete_online(privacy: Privacy, customer_id: str) -> int:
    url = privacy.settings.shared_redis_url
    if url is None:
        return 0  # the in-process copies are dropped by each worker (change feed)
    from churnops.io.online_store import RedisOnlineStore

    versions = _feature_set_versions(privacy) or ["default"]
    store = RedisOnlineStore(url, versions[0], socket_timeout=2.0)
    try:
        return store.delete([customer_id])
    finally:
        store.close()


def _ring(privacy: Privacy, change_id: int) -> None:
    from churnops.io.change_feed import ChangeFeed

    ChangeFeed(privacy.sql, privacy.settings.shared_redis_url).ring(change_id)


def _prediction(privacy: Privacy, row: dict[str, Any], data_keys: DataKeys) -> dict[str, Any]:
    return {
        "prediction_id": row["record_id"],
        "at": _iso(row["at_us"]),
        "model": {"name": row["model_name"], "version": row["model_version"], "variant": row["variant"]},
        "experiment": row["experiment"],
        "churn_probability": row["probability"],
        "churn": row["decision"],
        "threshold": row["threshold"],
        "reasons": [{"feature": f, "contribution": c} for f, c in orjson.loads(row["reasons"] or "[]")],
        "feature_source": row["feature_source"],
        "features": _open_payload(privacy, row, data_keys),
    }


def _open_payload(privacy: Privacy, row: dict[str, Any], data_keys: DataKeys) -> Any:
    wrapped = data_keys.get((row["key_epoch"], row["writer_id"]))
    if wrapped is None or row["payload"] is None:
        return None  # shredded by retention
    aad = envelope.associated_data(row["subject"], row["key_epoch"])
    data_key = envelope.unwrap_key(privacy.keys.wrapping_key, wrapped, aad)
    return orjson.loads(envelope.open_sealed(AESGCM(data_key), row["payload"], aad))


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": row["record_id"],
        "at": _iso(row["at_us"]),
        "action": row["action"],
        "principal": row["principal"],
        "details": orjson.loads(row["details"] or "{}"),
    }


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, tz=UTC).isoformat()

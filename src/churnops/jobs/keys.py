"""API key jobs: create (shown once), list, revoke; shared by `churnops keys` and `/v1/keys`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from churnops.core import auth, signing
from churnops.core.envelope import open_sealed, seal
from churnops.errors import ConfigError, Forbidden, InvalidRequest, NotFound
from churnops.io.change_feed import ChangeFeed, open_change_feed
from churnops.io.event_log import EventLog
from churnops.io.key_store import KeyRecord, SqlKeyStore, insert_key, now_us
from churnops.io.key_store import revoke_key as revoke_row
from churnops.io.secrets import Secrets, load_secrets
from churnops.settings import Settings

logger = logging.getLogger(__name__)

MAX_EXPIRY_DAYS = 3650
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$"  # the same rule in the OpenAPI schema
NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: `key` and `signing_secret` exist only here, never in the store."""

    record: KeyRecord
    key: str
    signing_secret: str | None

    def shown_once(self) -> dict[str, str]:
        out = {"key_id": self.record.key_id, "key": self.key}
        if self.signing_secret is not None:
            out["signing_secret"] = self.signing_secret
        return out


def _aad(key_id: str) -> bytes:
    return f"api-key-signing/{key_id}".encode()


def seal_signing_secret(secrets: Secrets, key_id: str, secret: str) -> bytes:
    return seal(AESGCM(secrets.signing_secret_key), secret.encode(), _aad(key_id))


def open_signing_secret(secrets: Secrets, record: KeyRecord) -> str:
    if record.signing_secret is None:
        raise ConfigError(f"key {record.key_id} is signed but has no stored signing secret")
    return open_sealed(
        AESGCM(secrets.signing_secret_key), record.signing_secret, _aad(record.key_id)
    ).decode()


def make_key(
    store: SqlKeyStore,
    secrets: Secrets,
    *,
    name: str,
    scopes: str | frozenset[str],
    rate_limit: str | None = None,
    signed: bool = False,
    expires_in_days: float | None = None,
    created_by: str | None = None,
    allowed: frozenset[str] | None = None,
    events: EventLog | None = None,
) -> NewKey:
    """Validate, generate, store. `allowed`: the creator's own scopes (a key cannot mint more).
    With `events` (the ledger on), the key exists only if its `keys.create` event was written."""
    granted = _scopes(scopes)
    if allowed is not None and granted - allowed:
        raise Forbidden(
            f"cannot create a key with scope {sorted(granted - allowed)[0]!r}: the caller does not hold it",
            "scope_escalation",
        )
    if not NAME.fullmatch(name):
        raise InvalidRequest("name: 1 to 128 characters, no control characters", "name")
    if rate_limit is not None:
        try:
            rate_limit = str(auth.parse_rate(rate_limit))
        except ValueError as err:
            raise InvalidRequest(f"rate_limit: {err}", "rate_limit") from err
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
        raise InvalidRequest(f"expires_in_days: between 0 and {MAX_EXPIRY_DAYS}", "expires_in_days")
    key_id, secret = auth.new_key_id(), auth.new_secret()
    signing_secret = signing.new_signing_secret() if signed else None
    created = now_us()
    record = KeyRecord(
        key_id=key_id,
        name=name,
        secret_hash=auth.hash_secret(secrets.pepper, secret),
        scopes=granted,
        rate_limit=rate_limit,
        signed=signed,
        signing_secret=seal_signing_secret(secrets, key_id, signing_secret) if signing_secret else None,
        created_at_us=created,
        expires_at_us=created + int(expires_in_days * 86_400e6) if expires_in_days else None,
        created_by=created_by,
    )
    if events is None:
        store.create(record)
    else:
        details = {
            "key_id": key_id,
            "name": name,
            "scopes": sorted(granted),
            "rate_limit": rate_limit,
            "signed": signed,
            "expires_at_us": record.expires_at_us,
        }
        events.append("keys.create", details, created_by, then=lambda conn: insert_key(conn, record))
    logger.info("api key %s (%s) created with scopes %s", key_id, name, ",".join(sorted(granted)))
    return NewKey(record, auth.format_key(key_id, secret), signing_secret)


def _scopes(scopes: str | frozenset[str]) -> frozenset[str]:
    try:
        return auth.parse_scopes(scopes)
    except ValueError as err:
        raise InvalidRequest(f"scopes: {err}", "scopes") from err


KEYS_TOPIC = "keys"  # change feed: {"key_id": ..., "action": "revoked"}


def revoke(
    store: SqlKeyStore,
    key_id: str,
    feed: ChangeFeed | None,
    events: EventLog | None = None,
    principal: str | None = None,
) -> KeyRecord:
    """Revoke a key (idempotent) and publish it on the change feed: every worker and replica
    refuses it within 2 s (`feed=None` only where no service follows, e.g. a fresh store).
    With `events`, the revocation and its `keys.revoke` ledger event commit together."""
    if not auth.is_key_id(key_id):
        raise NotFound(f"no API key {key_id!r}: key ids are 12 characters of a-z and 0-9")
    if events is None:
        record = store.revoke(key_id)
    elif store.get(key_id) is None:
        record = None
    else:
        _, record = events.append(
            "keys.revoke", {"key_id": key_id}, principal, then=lambda conn: revoke_row(conn, key_id)
        )
    if record is None:
        raise NotFound(f"no API key {key_id!r}")
    if feed is not None:
        feed.publish(KEYS_TOPIC, {"key_id": key_id, "action": "revoked"})
    logger.info("api key %s revoked", key_id)
    return record


def open_store(settings: Settings) -> SqlKeyStore:
    return SqlKeyStore(settings.sql_store_url)


@contextmanager
def _event_log(settings: Settings, secrets: Secrets) -> Iterator[EventLog | None]:
    """The ledger's event log for an operator's command (None with CHURNOPS_AUDIT=off)."""
    if settings.audit == "off":
        yield None
        return
    from churnops.io.ledger_store import LedgerStore
    from churnops.io.sql_store import SqlStore

    sql = SqlStore(settings.sql_store_url)
    try:
        yield EventLog(LedgerStore(sql), secrets)
    finally:
        sql.close()


def create_key(settings: Settings, **options: object) -> NewKey:
    """`churnops keys create`: the operator's own command (no creator scopes to respect)."""
    store, secrets = open_store(settings), load_secrets(settings)
    try:
        with _event_log(settings, secrets) as events:
            return make_key(store, secrets, events=events, **options)  # type: ignore[arg-type]
    finally:
        store.close()


def list_keys(settings: Settings) -> list[KeyRecord]:
    store = open_store(settings)
    try:
        return store.all()
    finally:
        store.close()


def revoke_key(settings: Settings, key_id: str, principal: str | None = None) -> KeyRecord:
    store = open_store(settings)
    feed = open_change_feed(settings.sql_store_url, settings.online_store_url)
    try:
        with _event_log(settings, load_secrets(settings)) as events:
            return revoke(store, key_id, feed, events, principal)
    finally:
        feed.close()
        feed.store.close()
        store.close()

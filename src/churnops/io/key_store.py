"""API keys in the SQL store (`api_keys`): SQLite embedded, PostgreSQL in production.

Rows hold the HMAC of the secret (never the secret) and, for signed keys, the signing secret
sealed with AES-GCM under a subkey of the master key (the server must compute the HMAC, so
it cannot be a one-way hash); the key id is the associated data, so a sealed secret copied
onto another row does not open. Keys are never deleted: revocation stamps `revoked_at_us`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from churnops.io.migrations import ensure_schema
from churnops.io.sql_backends import Backend, PoolLimits, backend_for, normalize_url
from churnops.io.sql_schema import api_keys


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class KeyRecord:
    """One row of `api_keys`."""

    key_id: str
    name: str
    secret_hash: str
    scopes: frozenset[str]
    rate_limit: str | None
    signed: bool
    signing_secret: bytes | None  # sealed
    created_at_us: int
    expires_at_us: int | None = None
    revoked_at_us: int | None = None
    created_by: str | None = None

    def usable_at(self, at_us: int) -> bool:
        expired = self.expires_at_us is not None and at_us >= self.expires_at_us
        return self.revoked_at_us is None and not expired

    def public(self) -> dict[str, Any]:
        """What `keys list` shows: everything but the hash and the sealed signing secret."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "rate_limit": self.rate_limit,
            "signed": self.signed,
            "created_at_us": self.created_at_us,
            "expires_at_us": self.expires_at_us,
            "revoked_at_us": self.revoked_at_us,
            "created_by": self.created_by,
        }


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        secret_hash=row.secret_hash,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        rate_limit=row.rate_limit,
        signed=bool(row.signed),
        signing_secret=bytes(row.signing_secret) if row.signing_secret is not None else None,
        created_at_us=int(row.created_at_us),
        expires_at_us=row.expires_at_us,
        revoked_at_us=row.revoked_at_us,
        created_by=row.created_by,
    )


def insert_key(conn: sa.Connection, record: KeyRecord) -> None:
    """The row of a new key, on the caller's transaction (e.g. beside its ledger event)."""
    conn.execute(
        api_keys.insert().values(
            key_id=record.key_id,
            name=record.name,
            secret_hash=record.secret_hash,
            scopes=",".join(sorted(record.scopes)),
            rate_limit=record.rate_limit,
            signed=record.signed,
            signing_secret=record.signing_secret,
            created_at_us=record.created_at_us,
            expires_at_us=record.expires_at_us,
            revoked_at_us=None,
            created_by=record.created_by,
        )
    )


def revoke_key(conn: sa.Connection, key_id: str, at_us: int | None = None) -> KeyRecord | None:
    """Stamp a revocation on the caller's transaction (the first one stays); None: no such key."""
    conn.execute(
        api_keys.update()
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at_us.is_(None))
        .values(revoked_at_us=at_us or now_us())
    )
    row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
    return _record(row) if row is not None else None


class SqlKeyStore:
    """Create, read, list and revoke keys; the schema is migrated on first use."""

    def __init__(self, url: str, limits: PoolLimits | None = None) -> None:
        self.url = sa.make_url(normalize_url(url))
        self.backend: Backend = backend_for(self.url)
        self.engine = self.backend.create_engine(self.url, limits or PoolLimits(pool_size=2, max_overflow=2))
        self._migrated = False
        self._lock = threading.Lock()

    def _ready(self) -> sa.Engine:
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    ensure_schema(self.engine)
                    self._migrated = True
        return self.engine

    def create(self, record: KeyRecord) -> None:
        with self._ready().begin() as conn:
            insert_key(conn, record)

    def get(self, key_id: str) -> KeyRecord | None:
        with self._ready().connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        return _record(row) if row is not None else None

    def all(self) -> list[KeyRecord]:
        with self._ready().connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at_us)).all()
        return [_record(row) for row in rows]

    def revoke(self, key_id: str, at_us: int | None = None) -> KeyRecord | None:
        """Stamp the revocation (idempotent: the first time stays); None if there is no such key."""
        with self._ready().begin() as conn:
            return revoke_key(conn, key_id, at_us)

    def revoked_among(self, key_ids: Iterable[str], chunk: int = 500) -> list[str]:
        """Which of `key_ids` are revoked: the poll of the keys a worker holds in its cache
        (no clock comparison, so a revoker's clock skew cannot hide a revocation)."""
        ids = list(key_ids)
        revoked: list[str] = []
        with self._ready().connect() as conn:
            for start in range(0, len(ids), chunk):
                query = sa.select(api_keys.c.key_id).where(
                    api_keys.c.key_id.in_(ids[start : start + chunk]), api_keys.c.revoked_at_us.is_not(None)
                )
                revoked += [row.key_id for row in conn.execute(query)]
        return revoked

    def close(self) -> None:
        self.engine.dispose()

"""API keys as the serving workers know them: presented key -> principal, verified once per key.

Hot path: a key seen before costs one dict lookup (the HMAC of its secret is checked once per
distinct key); a revocation (change feed topic `keys`, or the refresh poll) drops its entries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churnops.core import auth
from churnops.core.auth import Principal, Rate
from churnops.errors import Unauthenticated

if TYPE_CHECKING:
    from churnops.io.key_store import KeyRecord, SqlKeyStore
    from churnops.io.secrets import Secrets

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    principal: Principal
    signing_secret: str | None
    expires_at: float | None  # epoch seconds


class KeyCache:
    """Presented key -> principal, verified once per distinct key; revocations drop entries.

    `apply_change({"key_id", "action": "revoked"})` is the change-feed seam; `refresh()` polls
    the store for revocations of the keys this worker holds (the fallback every second)."""

    def __init__(
        self,
        store: SqlKeyStore,
        secrets: Secrets,
        default_rate: Rate,
        negative_ttl_s: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.default_rate = default_rate
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.verified: dict[str, KeyEntry] = {}
        self.records: dict[str, KeyRecord] = {}
        self.unknown: dict[str, float] = {}  # key id -> monotonic time its absence expires
        self.revoked: set[str] = set()
        self.rates: dict[str, Rate] = {}
        self.lookups = asyncio.Semaphore(4)

    async def resolve(self, presented: str) -> KeyEntry:
        entry = self.verified.get(presented)
        if entry is not None:
            if entry.expires_at is not None and time.time() >= entry.expires_at:
                raise Unauthenticated("API key has expired: make a new one", "expired_key")
            return entry
        return await self._verify(presented)

    async def _verify(self, presented: str) -> KeyEntry:
        try:
            key_id, secret = auth.parse_key(presented)
        except auth.MalformedKey as err:
            raise Unauthenticated(str(err), "malformed_key") from err
        record = await self._record(key_id)
        if record is None or not auth.secret_matches(self.secrets.pepper, secret, record.secret_hash):
            raise Unauthenticated("unknown API key", "unknown_key")
        if record.revoked_at_us is not None or key_id in self.revoked:
            raise Unauthenticated(f"API key {key_id} is revoked", "revoked_key")
        expires_at = record.expires_at_us / 1e6 if record.expires_at_us is not None else None
        if expires_at is not None and time.time() >= expires_at:
            raise Unauthenticated("API key has expired: make a new one", "expired_key")
        entry = KeyEntry(self._principal(record), self._signing_secret(record), expires_at)
        if len(self.verified) >= self.max_entries:
            self.verified.clear()
        self.verified[presented] = entry
        return entry

    async def _record(self, key_id: str) -> KeyRecord | None:
        record = self.records.get(key_id)
        if record is not None:
            return record
        if self.unknown.get(key_id, 0.0) > time.monotonic():
            return None
        async with self.lookups:  # well-formed unknown keys cannot flood the database
            record = await asyncio.to_thread(self.store.get, key_id)
        if record is None:
            if len(self.unknown) >= self.max_entries:
                self.unknown.clear()
            self.unknown[key_id] = time.monotonic() + self.negative_ttl_s
            return None
        if key_id not in self.revoked:  # a revocation may have landed while we read
            self.records[key_id] = record
        return record

    def _principal(self, record: KeyRecord) -> Principal:
        rate = self.default_rate
        if record.rate_limit:
            rate = self.rates.get(record.rate_limit) or self.rates.setdefault(
                record.rate_limit, auth.parse_rate(record.rate_limit)
            )
        key_id = record.key_id
        return Principal("key", key_id, record.scopes, f"key:{key_id}", rate)

    def _signing_secret(self, record: KeyRecord) -> str | None:
        if not record.signed:
            return None
        from churnops.jobs.keys import open_signing_secret

        return open_signing_secret(self.secrets, record)

    def apply_change(self, payload: Mapping[str, Any]) -> None:
        """Change-feed seam (topic `keys`): `{"key_id": ..., "action": "revoked"}`."""
        key_id = payload.get("key_id")
        if payload.get("action") != "revoked" or not isinstance(key_id, str):
            return
        self.revoked.add(key_id)
        self.records.pop(key_id, None)
        self.verified = {k: e for k, e in self.verified.items() if e.principal.subject != key_id}
        logger.info("api key %s revoked: dropped from this worker's cache", key_id)

    async def refresh(self) -> int:
        """Poll the store for revocations among the keys this worker holds; returns how many."""
        held = [k for k in self.records if k not in self.revoked]
        if not held:
            return 0
        revoked = await asyncio.to_thread(self.store.revoked_among, held)
        for key_id in revoked:
            self.apply_change({"key_id": key_id, "action": "revoked"})
        return len(revoked)

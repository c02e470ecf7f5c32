"""The change feed: how every worker and replica learns of a shared change within 2 s.

One mechanism for every kind of change (erasures, key revocations, experiments, alias
moves): a row in the SQL store's `change_log` is the record, and followers read the rows
after the last id they saw. Where Redis is configured a PUBLISH after each insert wakes
followers at once; without Redis (or while it is down) they find the row by polling the
change counter, a single index lookup, every half second. Payloads carry ids and
pseudonyms only, never a customer's clear id or PII.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from churnops.io.sql_schema import change_log
from churnops.io.sql_store import SqlStore
from churnops.settings import IN_PROCESS

logger = logging.getLogger(__name__)

CHANNEL = "churnops:changes"
PUBLISH_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Change:
    id: int
    topic: str
    payload: dict[str, Any]
    at_us: int


class ChangeFeed:
    """Publish and read changes; the SQL store is the source of truth, Redis only a doorbell."""

    def __init__(self, store: SqlStore, redis_url: str | None = None) -> None:
        self.store = store
        self.redis_url = redis_url
        self._redis: Any = None

    def publish(self, topic: str, payload: Mapping[str, Any]) -> int:
        """Record a change (committed before this returns) and ring the doorbell; returns its id."""
        row = {
            "topic": topic,
            "payload": orjson.dumps(dict(payload)).decode(),
            "at_us": time.time_ns() // 1000,
        }
        with self.store.ready().begin() as conn:
            key = conn.execute(change_log.insert().values(row)).inserted_primary_key
            change_id = int(key[0]) if key is not None else 0
        self.ring(change_id)
        return change_id

    def latest_id(self) -> int:
        with self.store.ready().connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.coalesce(sa.func.max(change_log.c.id), 0))).scalar_one()
            )

    def since(self, last_id: int, limit: int = 1000) -> list[Change]:
        """Changes after `last_id`, oldest first."""
        query = sa.select(change_log).where(change_log.c.id > last_id).order_by(change_log.c.id).limit(limit)
        with self.store.ready().connect() as conn:
            return [
                Change(int(r.id), str(r.topic), dict(orjson.loads(r.payload)), int(r.at_us))
                for r in conn.execute(query)
            ]

    def ring(self, change_id: int) -> None:
        """Wake followers of an already recorded change (a no-op without Redis: they poll)."""
        if self.redis_url is None:
            return
        import redis

        try:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    self.redis_url, socket_timeout=PUBLISH_TIMEOUT_S, socket_connect_timeout=PUBLISH_TIMEOUT_S
                )
            self._redis.publish(CHANNEL, str(change_id))
        except redis.RedisError as err:  # followers still find the row by polling
            logger.warning("change %d: Redis doorbell failed (%s); followers will poll", change_id, err)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def open_change_feed(sql_url: str, redis_url: str | None) -> ChangeFeed:
    """A feed on its own small pool: publishing never waits behind other work for a connection."""
    from churnops.io.sql_backends import PoolLimits

    limits = PoolLimits(pool_size=2, max_overflow=2, pool_timeout_s=2.0, statement_timeout_ms=5_000)
    return ChangeFeed(SqlStore(sql_url, limits), None if redis_url == IN_PROCESS else redis_url)

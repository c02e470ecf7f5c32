"""Where /v1/predict gets a customer's stored vector, and what it does when the store is down.

Embedded: the in-process map filled from the offline store at start-up.
Redis: a small in-process TTL cache, then the pooled async Redis reader with
millisecond timeouts behind a circuit breaker. While the breaker is open, or a
read fails, the answer comes from the last known vector (`stale`: every
customer read since start-up, seeded from the offline store) or, for a customer
never seen, from the request's features or the documented default vector
(`default`: every feature missing, imputed as in training).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from churnops.core.breaker import CircuitBreaker
from churnops.io.online_store import InMemoryOnlineStore
from churnops.io.reconnect import BackgroundReconnect

logger = logging.getLogger(__name__)

SOURCE_ONLINE = "online_store"
SOURCE_OFFLINE = "offline_store"
SOURCE_STALE = "stale"
SOURCE_DEFAULT = "default"
DEFAULT_VECTOR: Mapping[str, Any] = {}  # all missing: the transformer imputes training medians


class AsyncReader(Protocol):
    """The async online-store reader the service uses (Redis in production)."""

    async def get(self, entity_id: str) -> Mapping[str, Any] | None: ...

    async def get_many(
        self, entity_ids: Sequence[str], timeout_s: float | None = None
    ) -> Sequence[Mapping[str, Any] | None]: ...

    async def warm(self, connections: int = 4, timeout_s: float = 1.0) -> int: ...

    def pool_stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class FeatureSource(Protocol):
    """Where the service reads a customer's stored vector from (`source` says which path answered)."""

    kind: str

    async def get(self, customer_id: str) -> tuple[Mapping[str, Any] | None, str]: ...

    async def get_many(self, customer_ids: Sequence[str]) -> list[tuple[Mapping[str, Any] | None, str]]:
        """`get` for many customers at once (one store round trip where the store allows it)."""
        ...

    def stats(self) -> dict[str, int]: ...

    def entity_ids(self) -> list[str]:
        """Every customer id this process holds a vector of (for erasure by pseudonym)."""
        ...

    def forget(self, customer_ids: Sequence[str]) -> int:
        """Drop these customers' vectors from every in-process copy (erasure)."""
        ...

    async def warm(self) -> None: ...

    async def close(self) -> None: ...


class EmbeddedFeatures:
    """The in-process store: a dictionary lookup, nothing to fail."""

    kind = "memory"

    def __init__(self, store: InMemoryOnlineStore) -> None:
        self.store = store

    async def get(self, customer_id: str) -> tuple[Mapping[str, Any] | None, str]:
        return self.store.get(customer_id), SOURCE_ONLINE

    async def get_many(self, customer_ids: Sequence[str]) -> list[tuple[Mapping[str, Any] | None, str]]:
        return [(vector, SOURCE_ONLINE) for vector in self.store.get_many(customer_ids)]

    def stats(self) -> dict[str, int]:
        return {"entities": len(self.store)}

    def entity_ids(self) -> list[str]:
        return self.store.entity_ids()

    def forget(self, customer_ids: Sequence[str]) -> int:
        return self.store.delete(customer_ids)

    async def warm(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        self.store.close()


class OfflineLookup:
    """Read-through to the offline store on an online-store miss: one indexed query in a small
    dedicated thread pool, under a deadline and a circuit breaker of its own."""

    def __init__(
        self,
        lookup: Callable[[str], Mapping[str, Any] | None],
        breaker: CircuitBreaker,
        failures: tuple[type[BaseException], ...],
        timeout_s: float = 0.1,
        threads: int = 4,
        pool_status: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.lookup = lookup
        self.pool_status = pool_status
        self.breaker = breaker
        self.failures = failures
        self.timeout_s = timeout_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="offline-lookup")
        self.errors = 0

    async def get(self, customer_id: str) -> Mapping[str, Any] | None:
        """The stored vector, or None if the database has none; raises one of `failures` when down."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self.lookup, customer_id)
        return await asyncio.wait_for(future, self.timeout_s)

    async def warm(self, timeout_s: float = 5.0) -> None:
        """First use connects and checks the schema: pay it at start-up, not inside a 100 ms deadline."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self.lookup, "__churnops_warm_up__")
        try:
            await asyncio.wait_for(future, timeout_s)
        except self.failures as err:
            self.breaker.record_failure()
            logger.warning("offline store unreachable at start-up (%s): stale vectors on online misses", err)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class RedisFeatures:
    """TTL cache -> Redis (breaker-guarded) -> offline store on a miss -> stale vector -> default vector."""

    kind = "redis"

    def __init__(
        self,
        reader: AsyncReader,
        stale: dict[str, Any],
        breaker: CircuitBreaker,
        cache_ttl_s: float = 1.0,
        cache_max: int = 50_000,
        failures: tuple[type[BaseException], ...] = (OSError, TimeoutError),
        offline: OfflineLookup | None = None,
    ) -> None:
        self.reader = reader
        self.offline = offline
        self.stale: dict[str, Mapping[str, Any]] = stale
        self.breaker = breaker
        self.cache_ttl_s = cache_ttl_s
        self.cache_max = cache_max
        self.failures = failures
        self.cache: dict[str, tuple[float, Mapping[str, Any]]] = {}
        self.forgotten: set[str] = set()  # erased customers: never cached again by this process
        self.errors = 0
        self.fallbacks = 0
        # A failed read reopens the pool off the request path (see io/reconnect.py).
        self.reconnect = BackgroundReconnect(reader.warm, failures, "online store")

    async def get(self, customer_id: str) -> tuple[Mapping[str, Any] | None, str]:
        now = time.monotonic()
        cached = self.cache.get(customer_id)
        if cached is not None and cached[0] > now:
            return cached[1], SOURCE_ONLINE
        if not self.breaker.allow():
            return self._fallback(customer_id)
        try:
            vector = await self.reader.get(customer_id)
        except self.failures:
            self._failed()
            return self._fallback(customer_id)
        except BaseException:  # unexpected (or cancelled): still a failed call, so a probe resolves
            self.breaker.record_failure()
            self.errors += 1
            raise
        self.breaker.record_success()
        if vector is not None:
            self._remember(customer_id, vector, now)
            return vector, SOURCE_ONLINE
        return await self._read_through(customer_id, now)

    async def get_many(self, customer_ids: Sequence[str]) -> list[tuple[Mapping[str, Any] | None, str]]:
        """Cache hits, then one MGET for the rest (deadline scaled to the batch), then read-through."""
        now = time.monotonic()
        found: list[tuple[Mapping[str, Any] | None, str] | None] = []
        misses: list[int] = []
        for index, customer in enumerate(customer_ids):
            cached = self.cache.get(customer)
            if cached is not None and cached[0] > now:
                found.append((cached[1], SOURCE_ONLINE))
            else:
                found.append(None)
                misses.append(index)
        if misses:
            await self._fill(customer_ids, misses, found, now)
        return [item if item is not None else (None, SOURCE_ONLINE) for item in found]

    async def _fill(
        self,
        customer_ids: Sequence[str],
        misses: list[int],
        found: list[tuple[Mapping[str, Any] | None, str] | None],
        now: float,
    ) -> None:
        wanted = [customer_ids[i] for i in misses]
        if not self.breaker.allow():
            for index, customer in zip(misses, wanted, strict=True):
                found[index] = self._fallback(customer)
            return
        try:
            vectors = await self.reader.get_many(wanted, min(0.5, 0.005 + 2e-5 * len(wanted)))
        except self.failures:
            self._failed()
            for index, customer in zip(misses, wanted, strict=True):
                found[index] = self._fallback(customer)
            return
        except BaseException:
            self.breaker.record_failure()
            self.errors += 1
            raise
        self.breaker.record_success()
        for index, customer, vector in zip(misses, wanted, vectors, strict=True):
            if vector is not None:
                self._remember(customer, vector, now)
                found[index] = (vector, SOURCE_ONLINE)
            else:
                found[index] = await self._read_through(customer, now)

    def _failed(self) -> None:
        self.breaker.record_failure()
        self.errors += 1
        self.reconnect.start()

    async def _read_through(self, customer_id: str, now: float) -> tuple[Mapping[str, Any] | None, str]:
        """A Redis miss (expired TTL, not yet materialized) asks the offline store, if it answers."""
        offline = self.offline
        if offline is None:
            return None, SOURCE_ONLINE
        if not offline.breaker.allow():
            return self._fallback(customer_id)
        try:
            vector = await offline.get(customer_id)
        except offline.failures:
            offline.breaker.record_failure()
            offline.errors += 1
            return self._fallback(customer_id)
        except BaseException:  # unexpected (or cancelled): resolve the probe, then let it surface
            offline.breaker.record_failure()
            offline.errors += 1
            raise
        offline.breaker.record_success()
        if vector is None:
            return None, SOURCE_OFFLINE
        self._remember(customer_id, vector, now)
        return vector, SOURCE_OFFLINE

    def _remember(self, customer_id: str, vector: Mapping[str, Any], now: float) -> None:
        if customer_id in self.forgotten:
            return
        if len(self.cache) >= self.cache_max:
            self.cache.clear()  # cheap bound: a cache refills in one TTL
        self.cache[customer_id] = (now + self.cache_ttl_s, vector)
        self.stale[customer_id] = vector

    def _fallback(self, customer_id: str) -> tuple[Mapping[str, Any] | None, str]:
        self.fallbacks += 1
        vector = self.stale.get(customer_id)
        if vector is not None:
            return vector, SOURCE_STALE
        if customer_id in self.forgotten:  # erased: no default vector either, only request features
            return None, SOURCE_STALE
        return DEFAULT_VECTOR, SOURCE_DEFAULT

    def entity_ids(self) -> list[str]:
        return list({*list(self.cache), *list(self.stale)})  # list(dict): an atomic snapshot

    def forget(self, customer_ids: Sequence[str]) -> int:
        self.forgotten.update(customer_ids)  # a read in flight during the erasure must not re-cache them
        removed = 0
        for customer in customer_ids:
            removed += self.cache.pop(customer, None) is not None
            removed += self.stale.pop(customer, None) is not None
        return removed

    def stats(self) -> dict[str, int]:
        return {
            "cached": len(self.cache),
            "stale_known": len(self.stale),
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "reconnects": self.reconnect.count,
            "offline_errors": self.offline.errors if self.offline else 0,
            **(
                {f"offline_pool_{k}": v for k, v in self.offline.pool_status().items()}
                if self.offline
                else {}
            ),
            **{f"pool_{k}": v for k, v in self.reader.pool_stats().items()},
        }

    async def warm(self) -> None:
        """Open pooled connections up front: a connect costs 1.5-3 ms of a 5 ms read deadline."""
        try:
            await self.reader.warm()
        except self.failures as err:
            self.breaker.record_failure()
            logger.warning("online store not reachable at start-up (%s): serving stale vectors", err)
        if self.offline is not None:
            await self.offline.warm()

    async def close(self) -> None:
        await self.reconnect.close()
        await self.reader.close()
        if self.offline is not None:
            self.offline.close()

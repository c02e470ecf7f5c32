"""Online store contract, run against the in-process store and a real Redis, plus the async reader.

Redis is a dedicated `redis-server` on a free port (no persistence), started by a
module fixture and stopped by PID, so the suite also runs where nothing else
provides Redis. If the binary is missing or will not start, the tests fail.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from churnops.errors import ConfigError
from churnops.io.online_store import (
    DEPENDENCY_DOWN,
    AsyncRedisOnlineReader,
    InMemoryOnlineStore,
    OnlineStore,
    RedisOnlineStore,
    open_online_store,
    vector_key,
)
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

TTL = 3600
VECTORS: dict[str, dict[str, Any]] = {
    "c1": {"tenure": 12.5, "calls": 3, "plan": "Two year", "total": None, "senior": True},
    "c2": {"tenure": 0.0, "calls": 0, "plan": "Month-to-month", "total": 1e-9, "senior": False},
    "c:3/ü": {"tenure": -1.25, "calls": 2**40, "plan": "", "total": 123456.789, "senior": None},
}


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The module's server, restarted if a test killed it, with an empty database."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.signal(signal.SIGCONT)  # in case a test left it paused
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    return redis_server


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[OnlineStore]:
    """The store under contract, bound to version v1 (Redis keys expire after TTL seconds)."""
    if request.param == "memory":
        opened: OnlineStore = InMemoryOnlineStore(version="v1")
    else:
        opened = RedisOnlineStore(request.getfixturevalue("clean_redis").url, "v1", TTL)
    yield opened
    opened.close()


def _assert_same(actual: Any, expected: dict[str, Any]) -> None:
    """Equal values and identical types (1 vs 1.0 vs True are not the same feature value)."""
    assert actual == expected
    assert {k: type(v) for k, v in actual.items()} == {k: type(v) for k, v in expected.items()}


# -- contract, both implementations -------------------------------------------------------


def test_write_many_then_get_round_trips_values_and_types(store: OnlineStore) -> None:
    assert store.write_many("v1", VECTORS.items()) == len(VECTORS)
    for entity, vector in VECTORS.items():
        _assert_same(store.get(entity), vector)


def test_missing_entity_is_none_and_get_many_keeps_order(store: OnlineStore) -> None:
    store.write_many("v1", VECTORS.items())
    assert store.get("nobody") is None
    got = store.get_many(["c2", "nobody", "c1"])
    assert got == [VECTORS["c2"], None, VECTORS["c1"]]
    assert store.get_many([]) == []


def test_versions_are_isolated(store: OnlineStore) -> None:
    store.write_many("v1", [("c1", {"x": 1.0})])
    store.write_many("v2", [("c1", {"x": 2.0}), ("c9", {"x": 9.0})])
    assert store.get("c1") == {"x": 1.0}
    assert store.get("c9") is None
    assert len(store) == 1


def test_overwrite_replaces_the_whole_vector(store: OnlineStore) -> None:
    store.write_many("v1", [("c1", {"x": 1.0, "dropped": "a"})])
    store.write_many("v1", [("c1", {"x": 2.0})])
    assert store.get("c1") == {"x": 2.0}
    assert len(store) == 1


def test_len_counts_entities_of_the_version(store: OnlineStore) -> None:
    assert len(store) == 0
    written = store.write_many("v1", ((f"e{i}", {"i": i}) for i in range(2_345)))  # a generator, >1 chunk
    assert written == len(store) == 2_345
    assert store.get("e2344") == {"i": 2344}


def test_delete_erases_entities_from_every_version(store: OnlineStore) -> None:
    store.write_many("v1", VECTORS.items())
    store.write_many("v0", [("c1", {"old": 1}), ("c2", {"old": 2})])
    assert store.delete(["c1", "nobody"]) == 2  # c1 in v1 and in v0
    assert store.get("c1") is None
    assert store.get("c2") == VECTORS["c2"]
    assert len(store) == len(VECTORS) - 1
    assert store.write_many("v0", []) == 0
    assert store.delete(["c2"]) == 2


def test_numpy_scalars_are_stored_as_python_values(store: OnlineStore) -> None:
    store.write_many("v1", [("c1", {"f": np.float64(0.5), "i": np.int64(7)})])
    got = store.get("c1")
    assert got is not None
    if store.kind == "redis":  # the in-process store keeps the caller's objects as they are
        _assert_same(got, {"f": 0.5, "i": 7})


# -- Redis specifics -----------------------------------------------------------------------


def test_redis_keys_carry_the_ttl(clean_redis: RedisServer) -> None:
    store = RedisOnlineStore(clean_redis.url, "v1", TTL)
    forever = RedisOnlineStore(clean_redis.url, "v1", None)
    try:
        store.write_many("v1", [("c1", {"x": 1})])
        assert 0 < store.client.ttl(vector_key("v1", "c1")) <= TTL
        forever.write_many("v1", [("c1", {"x": 1})])  # SET without EX also clears the old expiry
        assert forever.client.ttl(vector_key("v1", "c1")) == -1
    finally:
        store.close()
        forever.close()


def test_redis_version_is_readable_by_its_own_store_and_deleted_alone(clean_redis: RedisServer) -> None:
    v1, v2 = RedisOnlineStore(clean_redis.url, "v1"), RedisOnlineStore(clean_redis.url, "v2")
    try:
        v1.write_many("v1", [("c1", {"x": 1.0})])
        v1.write_many("v2", [("c1", {"x": 2.0}), ("c2", {"x": 3.0})])
        assert v2.get("c1") == {"x": 2.0}
        assert len(v2) == 2
        assert v1.delete_version("v2") == 2
        assert len(v2) == 0
        assert v1.get("c1") == {"x": 1.0}
    finally:
        v1.close()
        v2.close()


def test_versions_that_would_alias_keys_are_refused(clean_redis: RedisServer) -> None:
    with pytest.raises(ConfigError, match="no ':'"):
        RedisOnlineStore(clean_redis.url, "v1:extra")
    store = RedisOnlineStore(clean_redis.url, "v[1]*")  # glob characters are escaped in SCAN patterns
    try:
        store.write_many("v[1]*", [("c1", {"x": 1})])
        store.write_many("v1", [("c1", {"x": 1})])
        assert len(store) == 1
    finally:
        store.close()


def test_factory_picks_the_store_from_the_url(clean_redis: RedisServer) -> None:
    memory = open_online_store("memory://", "v1")
    remote = open_online_store(clean_redis.url, "v1", 60)
    try:
        assert (memory.kind, remote.kind) == ("memory", "redis")
    finally:
        memory.close()
        remote.close()
    with pytest.raises(ConfigError, match="'http'"):
        open_online_store("http://user:secret@host/", "v1")


# -- async reader (serving) ----------------------------------------------------------------


def test_async_reader_matches_the_sync_store(clean_redis: RedisServer) -> None:
    sync = RedisOnlineStore(clean_redis.url, "v1")
    sync.write_many("v1", VECTORS.items())
    ids = [*VECTORS, "nobody"]

    async def read() -> tuple[list[Any], list[Any]]:
        reader = AsyncRedisOnlineReader(clean_redis.url, "v1")
        try:
            return [await reader.get(e) for e in ids], await reader.get_many(ids)
        finally:
            await reader.close()

    try:
        singles, many = asyncio.run(read())
        expected = sync.get_many(ids)
        assert singles == many == expected
        for got, want in zip(singles[:-1], expected[:-1], strict=True):
            _assert_same(got, dict(want or {}))
    finally:
        sync.close()


async def _timed_failure(reader: AsyncRedisOnlineReader) -> tuple[BaseException, float]:
    start = time.perf_counter()
    with pytest.raises(DEPENDENCY_DOWN) as caught:
        await reader.get("c1")
    return caught.value, time.perf_counter() - start


def test_async_reader_fails_fast_when_redis_dies_and_recovers(clean_redis: RedisServer) -> None:
    async def scenario() -> None:
        reader = AsyncRedisOnlineReader(clean_redis.url, "v1")
        try:
            assert await reader.get("c1") is None  # a pooled, connected connection
            clean_redis.kill()
            error, seconds = await _timed_failure(reader)
            assert isinstance(error, redis.exceptions.ConnectionError)
            assert seconds < 0.05
            _, seconds = await _timed_failure(reader)  # no connection to reuse: refused at connect
            assert seconds < 0.05
            clean_redis.start()
            writer = RedisOnlineStore(clean_redis.url, "v1")
            writer.write_many("v1", [("c1", {"x": 1.0})])
            writer.close()
            assert await reader.get("c1") == {"x": 1.0}
            assert reader.pool_stats()["in_use"] == 0
        finally:
            await reader.close()

    asyncio.run(scenario())


def test_async_reader_times_out_when_redis_hangs(clean_redis: RedisServer) -> None:
    async def scenario() -> None:
        reader = AsyncRedisOnlineReader(clean_redis.url, "v1")
        try:
            await reader.get("c1")
            clean_redis.signal(signal.SIGSTOP)  # alive but silent: the kernel still accepts connections
            try:
                error, seconds = await _timed_failure(reader)
                assert isinstance(error, redis.exceptions.TimeoutError)
                assert seconds < 0.05
            finally:
                clean_redis.signal(signal.SIGCONT)
            assert await reader.get("c1") is None
        finally:
            await reader.close()

    asyncio.run(scenario())


def test_async_reader_warm_opens_connections_off_the_request_path(clean_redis: RedisServer) -> None:
    async def scenario() -> dict[str, int]:
        reader = AsyncRedisOnlineReader(clean_redis.url, "v1", max_connections=4)
        try:
            assert await reader.warm(8) == 4  # capped at the pool's limit
            return reader.pool_stats()
        finally:
            await reader.close()

    assert asyncio.run(scenario()) == {"in_use": 0, "available": 4, "created": 4, "max": 4, "waiting": 0}


def test_async_calls_queued_for_a_connection_share_the_deadline(clean_redis: RedisServer) -> None:
    async def scenario() -> None:
        reader = AsyncRedisOnlineReader(clean_redis.url, "v1", max_connections=2)
        try:
            # Two open connections first, under a start-up deadline (as the service's lifespan does).
            assert await reader.warm(2, timeout_s=1.0) == 2
            clean_redis.signal(signal.SIGSTOP)
            try:
                start = time.perf_counter()
                results = await asyncio.gather(
                    *(reader.get(f"c{i}") for i in range(6)), return_exceptions=True
                )
                seconds = time.perf_counter() - start
            finally:
                clean_redis.signal(signal.SIGCONT)
            assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
            assert seconds < 0.05  # the four queued calls did not wait for a connection first
            stats = reader.pool_stats()
            assert (stats["in_use"], stats["waiting"]) == (0, 0)
            assert stats["created"] <= 2
        finally:
            await reader.close()

    asyncio.run(scenario())


def test_async_pool_is_bounded_and_back_to_idle_after_1000_gets(clean_redis: RedisServer) -> None:
    sync = RedisOnlineStore(clean_redis.url, "v1")
    sync.write_many("v1", ((f"e{i}", {"i": i}) for i in range(100)))
    sync.close()

    async def scenario() -> tuple[dict[str, int], dict[str, int], int]:
        # Generous timeouts: this test is about pool accounting, not latency, on a busy CI box.
        reader = AsyncRedisOnlineReader(
            clean_redis.url, "v1", read_timeout_s=5, connect_timeout_s=1, max_connections=8
        )
        peak: dict[str, int] = {}

        async def worker(start: int) -> int:
            found = 0
            for i in range(start, start + 20):
                found += (await reader.get(f"e{i % 100}")) is not None
                stats = reader.pool_stats()
                peak.update({k: max(v, peak.get(k, 0)) for k, v in stats.items()})
            return found

        try:
            found = sum(await asyncio.gather(*(worker(50 * n) for n in range(50))))
            return reader.pool_stats(), peak, found
        finally:
            await reader.close()

    final, peak, found = asyncio.run(scenario())
    assert found == 1_000
    assert peak["created"] <= 8
    assert peak["waiting"] > 0  # 50 callers on 8 connections queued, and were counted
    assert final == {
        "in_use": 0,
        "available": final["created"],
        "created": final["created"],
        "max": 8,
        "waiting": 0,
    }

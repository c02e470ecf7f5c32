"""The service's Redis feature path against a real redis-server: what a read cut off by its deadline
leaves behind for the next request."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis

from churnops.core.breaker import CircuitBreaker
from churnops.io.online_store import AsyncRedisOnlineReader, RedisOnlineStore
from churnops.serving.features import SOURCE_ONLINE, SOURCE_STALE, RedisFeatures
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


def test_a_read_cut_off_by_its_deadline_is_reconnected_off_the_request_path(
    redis_server: RedisServer,
) -> None:
    """redis-py closes a connection cancelled mid-reply. Reopened inside the next request's 5 ms
    deadline, it misses that deadline more often on a loaded host, and three misses in a row open
    the breaker: under injected stalls that served 14-62% stale answers from a healthy Redis."""
    writer = RedisOnlineStore(redis_server.url, "v1")
    writer.write_many("v1", [("c1", {"x": 1.0})])
    writer.close()
    admin = redis.Redis(port=redis_server.port, socket_timeout=2)
    admin.ping()  # its own connection is counted once, before the scenario

    def connections_received() -> int:
        return int(admin.info("stats")["total_connections_received"])

    async def scenario() -> None:
        # A 200 ms deadline, not the service's 5 ms: a stopped server misses any deadline, and the
        # reads that must succeed do not race a busy CI box.
        reader = AsyncRedisOnlineReader(
            redis_server.url, "v1", connect_timeout_s=0.2, read_timeout_s=0.2, max_connections=1
        )
        features = RedisFeatures(
            reader,
            {"c1": {"x": 0.0}},
            CircuitBreaker(failure_threshold=3),
            cache_ttl_s=0.0,  # every get goes to Redis
            failures=reader.failures,
        )
        try:
            await features.warm()
            assert await features.get("c1") == ({"x": 1.0}, SOURCE_ONLINE)
            before = connections_received()
            redis_server.signal(signal.SIGSTOP)  # alive but silent: the read times out
            try:
                assert await features.get("c1") == ({"x": 1.0}, SOURCE_STALE)
            finally:
                redis_server.signal(signal.SIGCONT)
            deadline = time.monotonic() + 2  # the reconnect is done once counted (accepted is earlier)
            while not features.stats().get("reconnects") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert connections_received() == before + 1, "no connection reopened after the timeout"
            assert features.stats()["reconnects"] == 1
            assert await features.get("c1") == ({"x": 1.0}, SOURCE_ONLINE)
            assert connections_received() == before + 1  # the request found an open connection
        finally:
            await features.close()

    try:
        asyncio.run(scenario())
    finally:
        admin.close()

"""The rate limiter's Redis path against a real redis-server: what a call cut off by its deadline
leaves behind for the next request."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis

from churnops.core.auth import Rate
from churnops.io.rate_limiter import RateLimiter, RedisBuckets
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

PER_MINUTE = Rate(100, 60)  # the default limit: a lease of one token, so every request asks Redis


def test_a_call_cut_off_by_its_deadline_is_reconnected_off_the_request_path(
    redis_server: RedisServer,
) -> None:
    """redis-py closes a connection cancelled mid-reply. A 100/minute key asks Redis on every
    request, so without a background reconnect the next request reopens it inside its own 5 ms
    deadline, misses it more often on a loaded host, and three misses open the breaker."""
    admin = redis.Redis(port=redis_server.port, socket_timeout=2)
    admin.ping()  # its own connection is counted once, before the scenario

    def connections_received() -> int:
        return int(admin.info("stats")["total_connections_received"])

    async def scenario() -> None:
        # A 200 ms deadline, not the service's 5 ms: a stopped server misses any deadline, and the
        # calls that must succeed do not race a busy CI box.
        limiter = RateLimiter(RedisBuckets(redis_server.url, timeout_s=0.2, max_connections=1))
        try:
            await limiter.shared.warm()
            assert (await limiter.acquire("k1", PER_MINUTE)).fallback is False
            before = connections_received()
            redis_server.signal(signal.SIGSTOP)  # alive but silent: the call times out
            try:
                assert (await limiter.acquire("k1", PER_MINUTE)).fallback is True
            finally:
                redis_server.signal(signal.SIGCONT)
            assert limiter.errors == 1
            deadline = time.monotonic() + 2  # the reconnect is done once counted (accepted is earlier)
            while not limiter.reconnect.count and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert connections_received() == before + 1, "no connection reopened after the timeout"
            assert limiter.reconnect.count == 1
            assert (await limiter.acquire("k1", PER_MINUTE)).fallback is False
            assert connections_received() == before + 1  # the request found an open connection
            assert limiter.decisions == {
                "allowed": 2, "limited": 0, "fallback_allowed": 1, "fallback_limited": 0
            }  # fmt: skip
        finally:
            await limiter.close()

    try:
        asyncio.run(scenario())
    finally:
        admin.close()

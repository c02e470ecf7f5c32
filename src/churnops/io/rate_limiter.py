"""Per-key rate limits: GCRA on Redis `TIME` (shared by every worker and replica) or in-process.

The hot path must not pay a Redis round trip per request (~60-100 µs of redis-py asyncio
CPU, more than the 0.8x budget of the whole access check), so each process *leases*
tokens: one store call takes up to `lease_size(rate)` tokens (a 100/minute key: one, so it
is exact across replicas; a 10^9/minute key: what it spends in 50 ms), later requests spend
the lease in-process, and leased tokens are never handed back, so the shared limit is never
exceeded. A refusal is remembered until its `retry_after` (no token can appear sooner).

Every store call has a deadline (5 ms) and a circuit breaker; with Redis down or slow the
limiter fails open to a local GCRA at the key's limit divided by the processes sharing it
(`CHURNOPS_REPLICAS` x workers), counts each decision by outcome, and returns to Redis on
its own (half-open probe).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis import asyncio as aredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry

from churnops.core.auth import Rate
from churnops.core.breaker import CircuitBreaker
from churnops.core.gcra import Grant, header_fields, lease_size, local_share, take
from churnops.errors import RateLimited
from churnops.io.reconnect import BackgroundReconnect
from churnops.settings import IN_PROCESS

logger = logging.getLogger(__name__)

# KEYS[1] = bucket; ARGV = interval µs, capacity µs, tokens wanted. Mirrors core.gcra.take.
GCRA_LUA = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local available = math.floor((now + capacity - tat) / interval + 1e-9)
local granted = math.min(want, available)
if granted < 1 then
  return {0, string.format('%.0f', tat + interval - capacity - now), 0, string.format('%.0f', tat - now)}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {granted, '0', available - granted, string.format('%.0f', tat - now)}
"""
FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
BUCKET_PREFIX = "churnops:rl:"


class SharedBuckets(Protocol):
    """Where the GCRA state lives: Redis (shared) or this process."""

    async def take(self, key: str, rate: Rate, want: int, timeout_s: float | None = None) -> Grant: ...

    async def warm(self) -> None: ...

    async def close(self) -> None: ...


class InProcessBuckets:
    """GCRA state in a dict: the embedded default, and the fallback while Redis is down."""

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.tats: dict[str, float] = {}

    def take_now(self, key: str, rate: Rate, want: int) -> Grant:
        if len(self.tats) >= self.max_keys:
            now = self.clock()
            self.tats = {k: v for k, v in self.tats.items() if v > now}  # full buckets carry no state
        grant = take(self.tats.get(key), self.clock(), rate, want)
        if grant.granted:
            self.tats[key] = grant.tat
        return grant

    async def take(self, key: str, rate: Rate, want: int, timeout_s: float | None = None) -> Grant:
        return self.take_now(key, rate, want)

    async def warm(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""


def redis_pool(url: str, max_connections: int, connect_timeout_s: float) -> aredis.ConnectionPool:
    """A bounded asyncio pool with no retries and no socket timeouts (callers hold one deadline)."""
    from churnops.io.online_store import _driver_info

    return aredis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        driver_info=_driver_info(),
    )


class RedisBuckets:
    """GCRA in one Lua script on Redis TIME: no client clock is ever trusted."""

    def __init__(self, url: str, timeout_s: float = 0.005, max_connections: int = 32) -> None:
        self.timeout_s = timeout_s
        # The connect timeout only bounds start-up; at request time the call's deadline covers it.
        self.client = aredis.Redis.from_pool(redis_pool(url, max_connections, connect_timeout_s=0.5))
        self.script = self.client.register_script(GCRA_LUA)

    async def take(self, key: str, rate: Rate, want: int, timeout_s: float | None = None) -> Grant:
        keys = [BUCKET_PREFIX + key]
        args: list[str | int] = [repr(rate.interval * 1e6), rate.seconds * 1_000_000, want]
        deadline = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(deadline):
                try:
                    reply = await self.script(keys=keys, args=args)
                except ConnectionError:
                    # A pooled connection the server or a proxy closed while idle: one fresh try,
                    # inside the same deadline (the script never ran on a dead connection).
                    reply = await self.script(keys=keys, args=args)
        except TimeoutError as err:
            raise TimeoutError(f"rate limiter: no reply from Redis within {deadline * 1e3:g} ms") from err
        granted, retry_us, remaining, reset_us = reply
        return Grant(int(granted), 0.0, int(retry_us) / 1e6, int(remaining), int(reset_us) / 1e6)

    async def warm(self, connections: int = 4, timeout_s: float = 2.0) -> None:
        """Load the script and open a few connections now, not inside a request's 5 ms deadline."""
        async with asyncio.timeout(timeout_s):
            await self.client.script_load(GCRA_LUA)
            warm = [BUCKET_PREFIX + "warm-up"]  # run the script once per connection: cold code paths too
            count = min(connections, self.client.connection_pool.max_connections)
            await asyncio.gather(*(self.script(keys=warm, args=[1e6, 1e6, 1]) for _ in range(count)))

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(slots=True)
class Lease:
    """Tokens this process holds for one key, and what the store said when it granted them."""

    left: int
    until: float  # monotonic time after which unspent tokens are void
    remaining: int  # the bucket's remaining tokens when granted
    reset_at: float  # monotonic time the bucket is full again
    rate: Rate
    fallback: bool
    refused_until: float = 0.0
    retry_after: float = 0.0
    renew_below: int = -1  # with this few tokens left, fetch the next lease in the background
    renew_at: float = math.inf  # ...or from this time on (a large lease only: never a 1-token one)


RENEWAL_DEADLINE_S = 0.05


class RateLimiter:
    """Leases on top of shared buckets, with a deadline, a breaker and the local fallback."""

    def __init__(
        self,
        shared: SharedBuckets,
        processes: int = 1,
        breaker: CircuitBreaker | None = None,
        failures: tuple[type[BaseException], ...] = FAILURES,
        lease_seconds: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.processes = processes
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, reset_after=1.0)
        self.failures = failures
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.local = InProcessBuckets()
        self.leases: dict[str, Lease] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.shares: dict[Rate, Rate] = {}
        self.decisions = {"allowed": 0, "limited": 0, "fallback_allowed": 0, "fallback_limited": 0}
        self.errors = 0
        self.reconnect = BackgroundReconnect(shared.warm, failures, "rate limiter")
        self.renewing: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def acquire(self, key: str, rate: Rate) -> Lease:
        """Spend one token of `key` (leased, or from the store); RateLimited when there is none."""
        lease = self.leases.get(key)
        if lease is not None and lease.left > 0 and lease.rate is rate:
            now = self.clock()
            if now < lease.until:
                lease.left -= 1
                self.decisions["fallback_allowed" if lease.fallback else "allowed"] += 1
                if (lease.left <= lease.renew_below or now >= lease.renew_at) and key not in self.renewing:
                    self._renew(key, rate)
                return lease
        return await self._refill(key, rate)

    def _renew(self, key: str, rate: Rate) -> None:
        """Fetch the next lease of a fast key before this one runs out, off the request path: no
        request waits behind a store call (nor behind a slow one) while tokens are left."""
        self.renewing.add(key)
        task = asyncio.get_running_loop().create_task(self._renewal(key, rate))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _renewal(self, key: str, rate: Rate) -> None:
        try:
            async with self._lock(key):
                # No request waits for a renewal: it may take longer than a request's deadline (a
                # saturated event loop alone can delay a reply past 5 ms).
                grant, fallback = await self._take(key, rate, RENEWAL_DEADLINE_S)
                now = self.clock()
                current = self.leases.get(key)
                if not grant.granted:
                    if current is not None:  # spend what is left, then refuse until retry_after
                        current.refused_until, current.retry_after = (
                            now + grant.retry_after,
                            grant.retry_after,
                        )
                        current.renew_below, current.renew_at = -1, math.inf
                    return
                # Tokens still held were taken from the store already: they join the new lease.
                held = current.left if current is not None and now < current.until else 0
                self.leases[key] = self._lease(grant, rate, fallback, now, held)
        finally:
            self.renewing.discard(key)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        return lock

    @staticmethod
    def _lease(grant: Grant, rate: Rate, fallback: bool, now: float, held: int = 0, spend: int = 0) -> Lease:
        granted = grant.granted
        lease = Lease(
            left=max(granted - spend, 0) + held,
            until=now + granted * rate.interval,
            remaining=grant.remaining,
            reset_at=now + grant.reset,
            rate=rate,
            fallback=fallback,
            refused_until=now + grant.retry_after if not granted else 0.0,
            retry_after=grant.retry_after,
        )
        if granted >= 8:
            lease.renew_below, lease.renew_at = granted // 4, now + 0.75 * granted * rate.interval
        return lease

    async def _refill(self, key: str, rate: Rate) -> Lease:
        async with self._lock(key):  # one store call per key at a time: concurrent requests share its lease
            now = self.clock()
            lease = self.leases.get(key)
            if lease is not None and lease.rate is rate:
                if lease.left > 0 and now < lease.until:
                    lease.left -= 1
                    self.decisions["fallback_allowed" if lease.fallback else "allowed"] += 1
                    return lease
                if now < lease.refused_until:
                    self._refuse(lease, now)
            grant, fallback = await self._take(key, rate)
            now = self.clock()
            lease = self._lease(grant, rate, fallback, now, spend=1)
            self.leases[key] = lease
            if not grant.granted:
                self._refuse(lease, now)
            self.decisions["fallback_allowed" if fallback else "allowed"] += 1
            return lease

    async def _take(self, key: str, rate: Rate, timeout_s: float | None = None) -> tuple[Grant, bool]:
        if self.breaker.allow():
            try:
                grant = await self.shared.take(key, rate, lease_size(rate, self.lease_seconds), timeout_s)
            except self.failures as err:
                self.breaker.record_failure()
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    logger.warning(
                        "rate limiter store failed (%s: %s): local limits", type(err).__name__, err
                    )
                self.reconnect.start()  # see io/reconnect.py: not inside the next call's deadline
            else:
                self.breaker.record_success()
                # Shadow accounting: the local bucket sees this process's share of the traffic too,
                # so a fallback starts from what was just spent, not from a full burst.
                self.local.take_now(key, self._share(rate), grant.granted)
                return grant, False
        share = self._share(rate)  # leased like the shared bucket: requests stay on the fast path
        return self.local.take_now(key, share, lease_size(share, self.lease_seconds)), True

    def _share(self, rate: Rate) -> Rate:
        share = self.shares.get(rate)
        if share is None:
            share = self.shares[rate] = local_share(rate, self.processes)
        return share

    def _refuse(self, lease: Lease, now: float) -> None:
        self.decisions["fallback_limited" if lease.fallback else "limited"] += 1
        retry = max(lease.refused_until - now, 0.0)
        policy, current = header_fields(lease.rate, 0, lease.reset_at - now)
        headers = [
            (b"retry-after", str(max(math.ceil(retry), 1)).encode()),
            (b"ratelimit-policy", policy.encode()),
            (b"ratelimit", current.encode()),
        ]
        raise RateLimited(f"rate limit of {lease.rate} spent: retry in {retry:.1f} s", headers)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.reconnect.close()
        await self.shared.close()


def open_rate_limiter(url: str, processes: int, timeout_s: float = 0.005) -> RateLimiter:
    """`memory://`: in-process buckets (exact for one process); `redis://...`: shared on Redis."""
    if url == IN_PROCESS:
        return RateLimiter(InProcessBuckets(), processes=1, failures=())
    return RateLimiter(RedisBuckets(url, timeout_s), processes=processes)

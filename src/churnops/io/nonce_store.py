"""Replay protection for signed requests: each nonce is accepted once (Redis `SET NX EX`, or in-process).

Fails closed: a nonce store that does not answer within its deadline refuses the request
(`Unavailable`, 503), because accepting it could accept a replay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis import asyncio as aredis

from churnops.errors import Unavailable
from churnops.io.rate_limiter import FAILURES, redis_pool
from churnops.settings import IN_PROCESS

NONCE_PREFIX = "churnops:nonce:"


class NonceStore(Protocol):
    async def claim(self, nonce: str, ttl_seconds: int) -> bool:
        """True the first time a nonce is seen within its TTL; raises Unavailable if unsure."""
        ...

    async def close(self) -> None: ...


class InProcessNonces:
    """The embedded default: a dict of nonce -> expiry, pruned as it grows."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.seen: dict[str, float] = {}
        self.max_entries = max_entries

    async def claim(self, nonce: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        if len(self.seen) >= self.max_entries:
            self.seen = {k: v for k, v in self.seen.items() if v > now}
            if len(self.seen) >= self.max_entries:
                raise Unavailable("too many signed requests in the replay window: nonce store full")
        expiry = self.seen.get(nonce)
        if expiry is not None and expiry > now:
            return False
        self.seen[nonce] = now + ttl_seconds
        return True

    async def close(self) -> None:
        """Nothing to release."""


class RedisNonces:
    """`SET churnops:nonce:<key id>:<nonce> 1 NX EX ttl` under a deadline; no answer -> refuse."""

    def __init__(self, url: str, timeout_s: float = 0.01, max_connections: int = 32) -> None:
        self.timeout_s = timeout_s
        self.client = aredis.Redis.from_pool(redis_pool(url, max_connections, connect_timeout_s=0.5))

    async def claim(self, nonce: str, ttl_seconds: int) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self.client.set(NONCE_PREFIX + nonce, b"1", nx=True, ex=ttl_seconds))
        except FAILURES as err:
            raise Unavailable(
                f"signed request refused: the replay (nonce) store is unreachable ({type(err).__name__})"
            ) from err

    async def close(self) -> None:
        await self.client.aclose()


def open_nonce_store(url: str, timeout_s: float = 0.01) -> NonceStore:
    return InProcessNonces() if url == IN_PROCESS else RedisNonces(url, timeout_s)

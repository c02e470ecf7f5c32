"""Follow the change feed in a worker: apply each shared change (erasure, revocation, experiment,
alias move) to this process's in-memory state within 2 s of its publication."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from churnops.io.change_feed import CHANNEL, Change, ChangeFeed

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
POLL_S = 0.5  # without a doorbell: two reads a second of an indexed max(id)
DOORBELL_POLL_S = 1.5  # with Redis: the poll only covers a missed PUBLISH
RESUBSCRIBE_S = 5.0  # after the doorbell was lost: poll, and try Redis again this often


class ChangeFollower:
    """Reads changes after the last id seen and hands each to its topic's handlers, in order."""

    def __init__(self, feed: ChangeFeed, start_id: int) -> None:
        self.feed = feed
        self.last_id = start_id
        self.handlers: dict[str, list[Handler]] = {}
        self.applied = 0

    def on(self, topic: str, handler: Handler) -> None:
        self.handlers.setdefault(topic, []).append(handler)

    async def run(self, stop: asyncio.Event) -> None:
        """The supervised body: wait for the doorbell or the poll interval, then catch up. Redis
        going away is expected, not a failure: the follower polls (one warning line) and
        subscribes again every RESUBSCRIBE_S."""
        doorbell = await self._subscribe()
        retry_at = time.monotonic() + RESUBSCRIBE_S
        try:
            while not stop.is_set():
                if doorbell is None and self.feed.redis_url is not None and time.monotonic() >= retry_at:
                    doorbell, retry_at = await self._subscribe(), time.monotonic() + RESUBSCRIBE_S
                doorbell = await self._wait(doorbell, stop)
                await self.catch_up()
        finally:
            if doorbell is not None:
                await doorbell.aclose()

    async def catch_up(self) -> int:
        """Apply every change published since the last one seen; returns how many."""
        changes = await asyncio.to_thread(self.feed.since, self.last_id)
        for change in changes:
            await self._apply(change)
            self.last_id = change.id
        return len(changes)

    async def _apply(self, change: Change) -> None:
        for handler in self.handlers.get(change.topic, ()):
            outcome = handler(change.payload)
            if inspect.isawaitable(outcome):
                await outcome
        self.applied += 1

    async def _subscribe(self) -> Any:
        if self.feed.redis_url is None:
            return None
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(self.feed.redis_url, socket_connect_timeout=1, socket_timeout=None)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(CHANNEL), 1.0)
        except (RedisError, OSError, TimeoutError) as err:
            logger.warning("change feed: no Redis doorbell (%s); polling every %.1f s", err, POLL_S)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            return None
        return pubsub

    async def _wait(self, doorbell: Any, stop: asyncio.Event) -> Any:
        """Wait for the next ring (or the poll interval); the doorbell to use next (None: lost)."""
        if doorbell is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
            return None
        from redis.exceptions import RedisError

        try:
            await doorbell.get_message(timeout=DOORBELL_POLL_S)
        except (RedisError, OSError) as err:
            logger.warning(
                "change feed: Redis doorbell lost (%s); polling every %.1f s, resubscribing every %.0f s",
                err, POLL_S, RESUBSCRIBE_S,
            )  # fmt: skip
            with contextlib.suppress(RedisError, OSError):
                await doorbell.aclose()
            return None
        return doorbell

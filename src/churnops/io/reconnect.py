"""One background reconnect at a time, started after a failed Redis call.

A call cut off by its deadline loses its connection (redis-py closes a connection cancelled
mid-reply), and a Redis restart loses them all. Reopened by the next call, the connect (TCP and
handshake: 1.5-3 ms, more on a loaded host) eats that call's own 5 ms deadline, so it misses more
often, loses that connection too, and three misses in a row open the caller's breaker. Reopening
off the request path, under a start-up deadline, breaks that chain; the breaker still decides when
calls resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundReconnect:
    """`start()` runs `reopen` in a task unless one is running; `count` is how many succeeded."""

    def __init__(
        self, reopen: Callable[[], Awaitable[Any]], failures: tuple[type[BaseException], ...], what: str
    ) -> None:
        self.reopen = reopen
        self.failures = failures
        self.what = what
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.reopen()
            self.count += 1
        except self.failures as err:  # still down: the breaker's probe tries again later
            logger.debug("%s reconnect failed: %s", self.what, type(err).__name__)
        except Exception:  # a one-shot task nobody awaits: log it, never lose it silently
            logger.exception("%s reconnect failed unexpectedly", self.what)

    async def close(self) -> None:
        """Cancel a running reconnect and wait for it: never left pending past its connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

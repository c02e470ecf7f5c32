"""Every background task of a worker runs under one supervisor: it never dies silently.

An unexpected exception is logged with its traceback, counted, and the task restarted
after a backoff that doubles up to a ceiling (and resets once the task has run cleanly
for a while). `background_task_up{task}` is 0 while a task is down, and readiness turns
false when a task keeps dying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

TaskBody = Callable[[asyncio.Event], Awaitable[None]]


@dataclass
class TaskHealth:
    name: str
    up: bool = False
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs named bodies `body(stop)` until `stop` is set, restarting any that fail."""

    def __init__(
        self,
        stop: asyncio.Event,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 30.0,
        unhealthy_after: int = 3,
    ) -> None:
        self.stop = stop
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.unhealthy_after = unhealthy_after
        self.health: dict[str, TaskHealth] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, body: TaskBody) -> None:
        self.health[name] = TaskHealth(name)
        self.tasks.append(asyncio.create_task(self._run(name, body), name=name))

    async def _run(self, name: str, body: TaskBody) -> None:
        health = self.health[name]
        delay = self.backoff_s
        while not self.stop.is_set():
            health.up, health.started_at = True, time.monotonic()
            try:
                await body(self.stop)
            except asyncio.CancelledError:
                health.up = False
                raise
            except Exception as err:  # the supervisor's whole job: log, count, restart
                health.up = False
                health.restarts += 1
                if time.monotonic() - health.started_at > self.healthy_after_s:
                    health.consecutive_failures, delay = 0, self.backoff_s
                health.consecutive_failures += 1
                health.last_error = f"{type(err).__name__}: {err}"
                logger.error(
                    "background task %s failed (%d in a row); restarting in %.1f s",
                    name,
                    health.consecutive_failures,
                    delay,
                    exc_info=err,
                )
                if await _wait(self.stop, delay):
                    break
                delay = min(delay * 2, self.max_backoff_s)
                continue
            if not self.stop.is_set():  # a body must only return once stopped: restart it
                logger.error("background task %s returned before shutdown; restarting", name)
                health.restarts += 1
                if await _wait(self.stop, delay):
                    break
        health.up = False

    def healthy(self) -> bool:
        """False when any task is failing again and again (readiness reports it)."""
        return not self.unhealthy()

    def unhealthy(self) -> list[str]:
        """Tasks that failed `unhealthy_after` times in a row and have not run cleanly since."""
        now = time.monotonic()
        return [
            h.name
            for h in self.health.values()
            if h.consecutive_failures >= self.unhealthy_after
            and not (h.up and now - h.started_at > self.healthy_after_s)
        ]

    def gauges(self) -> dict[str, int]:
        return {name: int(h.up) for name, h in self.health.items()}

    def restarts(self) -> dict[str, int]:
        return {name: h.restarts for name, h in self.health.items()}

    async def join(self, timeout_s: float = 30.0) -> None:
        """Wait for every task to finish after `stop` was set (cancel what outlives the timeout)."""
        done, pending = await asyncio.wait(self.tasks, timeout=timeout_s) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*done, *pending, return_exceptions=True)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when stopped meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True

"""Background work never dies silently, and a breaker's half-open probe always resolves.

Each test injects a failure that main used to handle badly: a probe raising outside the
expected failure types (breaker stuck half-open), a ValueError while loading a new model
version (the registry watcher died, readiness stayed green), a snapshot racing the event
loop's dict updates (housekeeping died with RuntimeError).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from churnops.core.breaker import BreakerState, CircuitBreaker
from churnops.serving.features import SOURCE_ONLINE, SOURCE_STALE, RedisFeatures
from churnops.serving.metrics import ServiceMetrics
from churnops.serving.supervisor import Supervisor

pytestmark = pytest.mark.unit


class FlakyReader:
    """An online-store reader whose next calls fail the way the test says."""

    def __init__(self) -> None:
        self.raise_next: BaseException | None = None

    async def get(self, entity_id: str) -> dict[str, Any] | None:
        if self.raise_next is not None:
            raise self.raise_next
        return {"tenure_months": 12}

    async def warm(self, connections: int = 4, timeout_s: float = 1.0) -> int:
        return 0

    def pool_stats(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        return None


def test_a_probe_that_raises_an_unexpected_error_still_lets_the_breaker_close() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_after=1.0, clock=lambda: now[0])
    reader = FlakyReader()
    features = RedisFeatures(reader, {"C1": {"tenure_months": 1}}, breaker, cache_ttl_s=0.0)

    async def scenario() -> list[str]:
        reader.raise_next = OSError("redis down")
        sources = [(await features.get("C1"))[1]]  # fails: breaker opens
        now[0] = 1.5  # half-open: the next call probes
        reader.raise_next = ValueError("a driver bug, not a connection error")
        with pytest.raises(ValueError, match="driver bug"):
            await features.get("C1")
        reader.raise_next = None  # Redis is healthy again
        for step in range(6):
            now[0] = 3.0 + step
            sources.append((await features.get("C1"))[1])
        return sources

    sources = asyncio.run(scenario())
    assert sources[0] == SOURCE_STALE
    assert sources[-1] == SOURCE_ONLINE, sources  # main: stale forever, the probe never resolved
    assert breaker.state is BreakerState.CLOSED


def test_a_probe_that_never_reports_back_is_replaced_after_reset_after() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_after=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0
    assert breaker.allow()  # the probe goes out ... and is cancelled, never recording anything
    assert not breaker.allow()
    now[0] = 2.5
    assert breaker.allow()  # a new probe may go


def test_the_supervisor_restarts_a_failing_task_and_reports_it() -> None:
    runs: list[int] = []

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) <= 3:
            raise RuntimeError(f"failure {len(runs)}")
        await stop.wait()

    async def scenario() -> tuple[list[str], dict[str, int], dict[str, int], bool]:
        stop = asyncio.Event()
        supervisor = Supervisor(stop, backoff_s=0.01, max_backoff_s=0.02, unhealthy_after=3)
        supervisor.start("flaky", flaky)
        await asyncio.sleep(0.02)
        unhealthy = supervisor.unhealthy()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(runs) >= 4:
                break
        up, restarts = supervisor.gauges(), supervisor.restarts()
        stop.set()
        await supervisor.join(1.0)
        return unhealthy, up, restarts, supervisor.healthy()

    unhealthy, up, restarts, _ = asyncio.run(scenario())
    assert len(runs) >= 4
    assert restarts == {"flaky": 3}
    assert up == {"flaky": 1}
    assert unhealthy in ([], ["flaky"])


def test_a_task_that_keeps_dying_turns_readiness_false_and_its_gauge_zero() -> None:
    async def dying(stop: asyncio.Event) -> None:
        raise ValueError("cannot build this model")

    async def scenario() -> tuple[bool, dict[str, int]]:
        stop = asyncio.Event()
        supervisor = Supervisor(stop, backoff_s=0.005, max_backoff_s=0.01, unhealthy_after=3)
        supervisor.start("registry-watcher", dying)
        await asyncio.sleep(0.1)
        healthy, up = supervisor.healthy(), supervisor.gauges()
        stop.set()
        await supervisor.join(1.0)
        return healthy, up

    healthy, up = asyncio.run(scenario())
    assert not healthy
    assert up == {"registry-watcher": 0}


def test_metrics_snapshot_survives_the_event_loop_adding_keys_meanwhile() -> None:
    metrics = ServiceMetrics()
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            metrics.observe_http("GET", f"/route/{i % 5000}", 200)
            metrics.observe_prediction("champion", str(i % 3000), "online_store", 0.001, "ok")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for _ in range(300):
            metrics.snapshot()  # main: RuntimeError: dictionary changed size during iteration
    finally:
        stop.set()
        thread.join()

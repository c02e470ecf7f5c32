"""BackgroundReconnect: one reconnect at a time, failures counted out, nothing lost silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from churnops.io.reconnect import BackgroundReconnect

pytestmark = pytest.mark.unit


def test_starts_while_one_runs_share_it_and_a_success_is_counted() -> None:
    calls = 0

    async def reopen() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)

    async def scenario() -> BackgroundReconnect:
        reconnect = BackgroundReconnect(reopen, (OSError,), "test store")
        for _ in range(5):  # five failed calls in a burst: one reconnect
            reconnect.start()
        await asyncio.sleep(0.05)
        reconnect.start()  # a later failure: a new one
        await asyncio.sleep(0.05)
        await reconnect.close()
        return reconnect

    assert asyncio.run(scenario()).count == 2
    assert calls == 2


def test_a_store_still_down_is_not_counted_and_an_unexpected_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[BaseException] = [OSError("refused"), ValueError("bug")]

    async def reopen() -> None:
        raise errors.pop(0)

    async def scenario() -> BackgroundReconnect:
        reconnect = BackgroundReconnect(reopen, (OSError,), "test store")
        for _ in range(2):
            reconnect.start()
            await asyncio.sleep(0.01)
        await reconnect.close()
        return reconnect

    with caplog.at_level(logging.DEBUG, logger="churnops.io.reconnect"):
        assert asyncio.run(scenario()).count == 0
    assert [r.levelname for r in caplog.records] == ["DEBUG", "ERROR"]
    assert "test store reconnect failed unexpectedly" in caplog.records[1].getMessage()
    assert caplog.records[1].exc_info is not None


def test_close_cancels_a_reconnect_in_flight() -> None:
    async def reopen() -> None:
        await asyncio.sleep(10)

    async def scenario() -> None:
        reconnect = BackgroundReconnect(reopen, (OSError,), "test store")
        reconnect.start()
        await asyncio.sleep(0)
        await asyncio.wait_for(reconnect.close(), 1)
        assert reconnect.count == 0

    asyncio.run(scenario())

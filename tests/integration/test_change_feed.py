"""The change feed's follower with a real Redis doorbell that dies and comes back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis

from churnops.io.change_feed import CHANNEL, ChangeFeed
from churnops.io.sql_store import SqlStore
from churnops.serving import changes
from churnops.serving.supervisor import Supervisor
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


def test_losing_the_redis_doorbell_is_polling_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed under a subscribed follower: the task keeps running (no failure, no traceback
    in the log), changes still arrive by polling, and the doorbell is back once Redis is."""
    monkeypatch.setattr(changes, "RESUBSCRIBE_S", 0.5, raising=False)
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    store = SqlStore(f"sqlite:///{tmp_path / 'feed.db'}")
    store.upgrade()
    feed = ChangeFeed(store, redis_server.url)
    follower = changes.ChangeFollower(feed, feed.latest_id())
    seen: list[int] = []
    follower.on("test", lambda payload: seen.append(payload["n"]))

    async def scenario() -> tuple[int, bool, int]:
        stop = asyncio.Event()
        supervisor = Supervisor(stop)
        supervisor.start("change-feed", follower.run)
        await asyncio.sleep(0.5)
        feed.publish("test", {"n": 1})
        await asyncio.sleep(0.5)
        redis_server.kill()
        await asyncio.sleep(0.5)
        feed.publish("test", {"n": 2})  # the ring fails: found by polling
        await asyncio.sleep(1.5)
        redis_server.start()  # same port
        await asyncio.sleep(1.5)  # resubscribed
        subscribers = dict(redis.Redis.from_url(redis_server.url).pubsub_numsub(CHANNEL))
        feed.publish("test", {"n": 3})
        await asyncio.sleep(0.5)
        failures = supervisor.health["change-feed"].restarts
        unhealthy = bool(supervisor.unhealthy())
        stop.set()
        await supervisor.join(5)
        return failures, unhealthy, subscribers.get(CHANNEL.encode(), 0)

    with caplog.at_level(logging.WARNING):
        failures, unhealthy, subscribers = asyncio.run(scenario())
    redis_server.stop()
    assert seen == [1, 2, 3]
    assert subscribers == 1, "the follower did not subscribe again once Redis was back"
    assert failures == 0, "a lost doorbell counted as a failure of the task"
    assert not unhealthy
    assert not any(r.exc_info for r in caplog.records), "a lost doorbell was logged with a traceback"
    assert any("doorbell lost" in r.getMessage() for r in caplog.records)

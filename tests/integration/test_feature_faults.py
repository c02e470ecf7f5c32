"""Fault test with the real servers: kill redis-server under load, then bring it back.

No request may fail: while Redis is gone answers come from the last known vector
(`feature_source: "stale"`), the online-store breaker opens within a second, and
it closes again once redis-server is back (restarted from its RDB snapshot).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from churnops.jobs.materialize import materialize
from churnops.settings import Settings
from tests.conftest import PipelineRun
from tests.servers import RedisServer, start_churnops, stop_churnops

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Load:
    """Requests sent by one client thread: (sent at, seconds, status, feature_source)."""

    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def drive(url: str, ids: list[str], load: Load) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        i = 0
        while not load.stop.is_set():
            sent = time.monotonic()
            response = client.post("/v1/predict", json={"customer_id": ids[i % len(ids)]})
            source = response.json().get("feature_source", "") if response.status_code == 200 else ""
            load.results.append((sent, time.monotonic() - sent, response.status_code, source))
            i += 1


@dataclass
class Outage:
    """One run of load through a dependency failure; monotonic times, breaker delays in seconds."""

    results: list[tuple[float, float, int, str]]
    failed: float
    opened_after: float
    restored: float
    closed_after: float
    recovered: float
    pools: dict[str, int]


def run_outage(
    url: str,
    ids: list[str],
    dependency: str,
    fail: Callable[[], None],
    restore: Callable[[], None],
    min_requests: int = 0,
) -> Outage:
    """Load without pause: 2 s healthy, `fail()`, breaker open, 2 s down, `restore()`, breaker
    closed, 1.5 s more (and up to 30 s more for `min_requests`), then the pools once idle."""
    load = Load()
    client = threading.Thread(target=drive, args=(url, ids, load))
    client.start()
    try:
        time.sleep(2.0)
        failed = time.monotonic()
        fail()
        opened_after = wait_for_dependency(url, dependency, 2, timeout=3.0)
        time.sleep(2.0)
        restored = time.monotonic()
        restore()
        closed_after = wait_for_dependency(url, dependency, 0, timeout=10.0)
        recovered = time.monotonic()
        time.sleep(1.5)
        deadline = time.monotonic() + 30
        while len(load.results) < min_requests and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        load.stop.set()
        client.join(timeout=30)
    return Outage(load.results, failed, opened_after, restored, closed_after, recovered, idle_pools(url))


def p95_healthy_and_down(
    healthy: list[tuple[float, float, int, str]], down: list[tuple[float, float, int, str]]
) -> dict[str, float]:
    """Latency p95 (seconds) of the answers before the failure and while it lasted."""
    return {
        name: float(np.percentile([r[1] for r in rows], 95))
        for name, rows in (("healthy", healthy), ("down", down))
    }


def report(outage: Outage, p95: dict[str, float], back: str) -> None:
    print(
        f"\nrequests {len(outage.results)}, errors 0, breaker opened after {outage.opened_after:.3f} s, "
        f"closed {outage.closed_after:.2f} s after {back}; p95 healthy {p95['healthy'] * 1e3:.2f} ms, "
        f"down {p95['down'] * 1e3:.2f} ms"
    )


def test_redis_killed_and_restarted_under_load(
    pipeline_run: PipelineRun, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(churnops_home=pipeline_run.settings.home, REDIS_URL=redis_server.url)
    written = materialize(settings, pipeline_run.workdir.read_meta()["feature_set_version"])
    assert written["entities"] == 4000
    with redis.Redis.from_url(redis_server.url) as client:
        client.save()  # the restarted server reloads this snapshot
    server = start_churnops(
        pipeline_run.settings.home,
        tmp_path / "serve.log",
        env={"REDIS_URL": redis_server.url, "CHURNOPS_AUTH": "off"},  # the feature path, not access control
    )
    ids = list(pd.read_csv(pipeline_run.data)["customer_id"])
    try:
        # At least 10,000 requests through the failure and recovery before the pools are checked.
        outage = run_outage(
            server.url, ids, "online_store", redis_server.kill, redis_server.start, min_requests=10_000
        )
    finally:
        stop_churnops(server)

    # No connection leaked through the failures: every pool is back to idle.
    assert outage.pools["pool_in_use"] == 0
    assert outage.pools["pool_waiting"] == 0
    assert outage.pools["offline_pool_checked_out"] == 0
    results = outage.results
    assert len(results) >= 10_000
    assert [r for r in results if r[2] != 200] == []
    healthy = [r for r in results if r[0] + r[1] < outage.failed]  # answered before the kill
    down = [r for r in results if outage.failed + outage.opened_after < r[0] < outage.restored]
    after = [r for r in results if r[0] > outage.recovered + 1.1]  # past one cache TTL
    assert down
    assert {r[3] for r in down} <= {"stale", "online_store"}  # online_store: the 1 s in-process cache
    assert sum(r[3] == "stale" for r in down) > len(down) / 2
    # Back on Redis; a pooled connection that died with the old server fails once and is reopened
    # off the request path, so an odd request right after recovery may still be answered stale
    # (never an error), and on a busy 2-core CI box the 5 ms Redis deadline is missed now and then
    # (a stale answer by design). Stuck on the fallback would be ~0%. Before timed-out connections
    # were reopened in the background, one CI run served 50% stale here (the breaker kept opening:
    # test_redis_features.py); with it, injected stalls of up to 6 ms give 1.7-2.9%.
    after_sources = Counter(r[3] for r in after)
    assert after_sources["online_store"] >= 0.9 * len(after), after_sources
    assert outage.opened_after <= 1.0
    assert outage.closed_after < 10.0
    p95 = p95_healthy_and_down(healthy, down)
    assert p95["down"] <= 2 * p95["healthy"], p95
    report(outage, p95, "restart")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database on the local server (dropped afterwards)."""
    import psycopg

    name = f"churnops_fault_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(
        "host=127.0.0.1 user=postgres dbname=postgres", autocommit=True, connect_timeout=5
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(
        "host=127.0.0.1 user=postgres dbname=postgres", autocommit=True, connect_timeout=5
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_cut_and_restored_under_load(
    pipeline_run: PipelineRun, redis_server: RedisServer, pg_database: str, tmp_path: Path
) -> None:
    """Customers missing from Redis are read through from PostgreSQL; cut PostgreSQL mid-run."""
    from churnops.io.offline_store import SqlOfflineStore
    from churnops.io.online_store import RedisOnlineStore
    from tests.tcp_proxy import TcpProxy

    version = pipeline_run.workdir.read_meta()["feature_set_version"]
    spec = pipeline_run.workdir.read_spec()
    raw = pd.read_csv(pipeline_run.data)
    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_database}"
    store = SqlOfflineStore(f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}")
    store.write_features(
        version,
        spec.name,
        raw[[spec.id_column, *spec.feature_columns]],
        spec.id_column,
        pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(),
    )
    store.close()
    # Only the first half is in Redis: the other half is a read-through to PostgreSQL.
    online = RedisOnlineStore(redis_server.url, version)
    online.delete_version(version)
    half = raw.iloc[:2000]
    online.write_many(
        version, ((r[spec.id_column], {c: r[c] for c in spec.feature_columns}) for _, r in half.iterrows())
    )
    online.close()

    stores = {"REDIS_URL": redis_server.url, "DATABASE_URL": url, "CHURNOPS_AUTH": "off"}
    server = start_churnops(pipeline_run.settings.home, tmp_path / "pg.log", env=stores)
    ids = list(raw["customer_id"].iloc[2000:])
    try:
        outage = run_outage(server.url, ids, "offline_store", proxy.cut, proxy.restore)
    finally:
        stop_churnops(server)
        proxy.stop()

    assert outage.pools["pool_in_use"] == 0
    assert outage.pools["offline_pool_checked_out"] == 0
    results = outage.results
    assert [r for r in results if r[2] != 200] == []
    healthy = [r for r in results if r[0] + r[1] < outage.failed]  # answered before the cut
    down = [r for r in results if outage.failed + outage.opened_after < r[0] < outage.restored]
    after = [r for r in results if r[0] > outage.recovered + 1.1]
    # Healthy: answered from the stores. A read-through that misses its 100 ms deadline on a busy
    # 2-core machine (a host stall) answers stale by design: allow 1%, and at least 3 answers, since
    # a slow CI host fits only ~200 requests into the 2 healthy seconds (2 of 195 were seen there).
    # A broken read-through would answer every one of them stale.
    sources = Counter(r[3] for r in healthy)
    assert set(sources) <= {"offline_store", "online_store", "stale"}, sources
    assert sources["stale"] <= max(3, len(healthy) / 100), sources
    assert sum(r[3] == "stale" for r in down) > len(down) / 2
    assert "offline_store" in {r[3] for r in after}
    assert outage.opened_after <= 1.0
    p95 = p95_healthy_and_down(healthy, down)
    assert p95["down"] <= 2 * p95["healthy"], p95
    report(outage, p95, "restore")


def wait_for_dependency(url: str, dependency: str, wanted: int, timeout: float) -> float:
    pattern = re.compile(rf'^circuit_breaker_state\{{dependency="{dependency}"\}} (\d)', re.M)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found = pattern.search(httpx.get(f"{url}/metrics", timeout=5).text)
        if found and int(found.group(1)) == wanted:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{dependency} breaker not {wanted} after {timeout} s")


def idle_pools(url: str, timeout: float = 5.0) -> dict[str, int]:
    """Pool stats once nothing is checked out; a lookup that outlived its 100 ms deadline (a connect
    attempt during the outage) may still hold a connection for up to its 1 s connect timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pools: dict[str, int] = httpx.get(f"{url}/v1/models", timeout=5).json()["online_store"]
        busy = pools.get("pool_in_use", 0) + pools.get("offline_pool_checked_out", 0)
        if busy == 0 or time.monotonic() > deadline:
            return pools
        time.sleep(0.1)

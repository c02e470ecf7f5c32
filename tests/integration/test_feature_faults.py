"""Fault test with the real servers: kill redis-server under load, then bring it back.

No request may fail: while Redis is gone answers come from the last known vector
(`feature_source: "stale"`), the online-store breaker opens within a second, and
it closes again once redis-server is back (restarted from its RDB snapshot).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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
from tests.servers import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BREAKER = re.compile(r'^circuit_breaker_state\{dependency="online_store"\} (\d)', re.M)


@dataclass
class Load:
    """Requests sent by one client thread: (sent at, seconds, status, feature_source)."""

    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-fault"))
    server.start()
    yield server
    server.stop()


def start_service(home: Path, redis_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env |= {"CHURNOPS_HOME": str(home), "REDIS_URL": redis_url}
    cmd = [sys.executable, "-m", "churnops", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(log.read_text()[-3000:])


def breaker_state(url: str) -> int:
    found = BREAKER.search(httpx.get(f"{url}/metrics", timeout=5).text)
    return int(found.group(1)) if found else -1


def wait_for_breaker(url: str, wanted: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if breaker_state(url) == wanted:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"breaker not {wanted} after {timeout} s (now {breaker_state(url)})")


def drive(url: str, ids: list[str], load: Load) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        i = 0
        while not load.stop.is_set():
            sent = time.monotonic()
            response = client.post("/v1/predict", json={"customer_id": ids[i % len(ids)]})
            source = response.json().get("feature_source", "") if response.status_code == 200 else ""
            load.results.append((sent, time.monotonic() - sent, response.status_code, source))
            i += 1


def test_redis_killed_and_restarted_under_load(
    pipeline_run: PipelineRun, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(churnops_home=pipeline_run.settings.home, REDIS_URL=redis_server.url)
    written = materialize(settings, pipeline_run.workdir.read_meta()["feature_set_version"])
    assert written["entities"] == 4000
    with redis.Redis.from_url(redis_server.url) as client:
        client.save()  # the restarted server reloads this snapshot
    proc, url = start_service(pipeline_run.settings.home, redis_server.url, tmp_path / "serve.log")
    ids = list(pd.read_csv(pipeline_run.data)["customer_id"])
    load = Load()
    client = threading.Thread(target=drive, args=(url, ids, load))
    client.start()
    try:
        time.sleep(2.0)
        killed = time.monotonic()
        redis_server.kill()
        opened_after = wait_for_breaker(url, 2, timeout=3.0)
        time.sleep(2.0)
        restarted = time.monotonic()
        redis_server.start()
        closed_after = wait_for_breaker(url, 0, timeout=10.0)
        recovered = time.monotonic()
        time.sleep(1.5)
    finally:
        load.stop.set()
        client.join(timeout=30)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)

    results = load.results
    assert len(results) > 300
    assert [r for r in results if r[2] != 200] == []
    healthy = [r for r in results if r[0] < killed]
    down = [r for r in results if killed + opened_after < r[0] < restarted]
    after = [r for r in results if r[0] > recovered + 1.1]  # past one cache TTL
    assert down
    assert {r[3] for r in down} <= {"stale", "online_store"}  # online_store: the 1 s in-process cache
    assert sum(r[3] == "stale" for r in down) > len(down) / 2
    assert {r[3] for r in after} == {"online_store"}
    assert opened_after <= 1.0
    assert closed_after < 10.0
    p95 = {
        name: float(np.percentile([r[1] for r in rows], 95))
        for name, rows in (("healthy", healthy), ("down", down))
    }
    assert p95["down"] <= 2 * p95["healthy"], p95
    print(
        f"\nrequests {len(results)}, errors 0, breaker opened after {opened_after:.3f} s, "
        f"closed {closed_after:.2f} s after restart; p95 healthy {p95['healthy'] * 1e3:.2f} ms, "
        f"down {p95['down'] * 1e3:.2f} ms"
    )

"""Rate limits and revocation across 3 `churnops serve` processes sharing one real Redis.

Redis sits behind a TCP proxy so a test can make it answer 2 s late; it is killed and
restarted for real. Requests are GET /v1/models (scope predict): no feature reads involved.
GCRA semantics: a burst of N, then one token every 60/N s; so "150 requests at a 100/minute
key" accepts 100 plus what regenerated while they were sent (reported, and bounded below).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from churnops.client import sign_request
from churnops.core.auth import Rate
from churnops.io.rate_limiter import RedisBuckets
from churnops.jobs.keys import NewKey, revoke_key
from churnops.settings import Settings
from tests.access_helpers import make_key
from tests.conftest import PipelineRun
from tests.servers import ChurnopsServer, RedisServer, start_churnops, stop_churnops
from tests.tcp_proxy import ProxyProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL = 0.6  # 100/minute


@dataclass
class Cluster:
    servers: list[ChurnopsServer]
    redis: RedisServer
    proxy: ProxyProcess
    settings: Settings


@pytest.fixture(scope="module")
def cluster(
    pipeline_run: PipelineRun, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    proxy = ProxyProcess("127.0.0.1", redis_server.port)
    logs = tmp_path_factory.mktemp("cluster")
    # 250 ms rather than the default 5: tests run under `nice -n 15` on a shared 2-core box, where a
    # server process can wait tens of ms for a CPU, and a missed deadline answers from the local
    # share (by design, counted). Still far below the 2 s of the slow-Redis case; the default
    # deadline itself is checked in test_the_default_deadline_gives_up_in_milliseconds.
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "CHURNOPS_REPLICAS": "3",
        "CHURNOPS_RATE_LIMIT_DEADLINE_MS": "250",
    }
    home = pipeline_run.settings.home
    with ThreadPoolExecutor(3) as pool:
        servers = list(pool.map(lambda i: start_churnops(home, logs / f"serve-{i}.log", env=env), range(3)))
    try:
        # The test's own commands (keys create/revoke) see the servers' stores, as an operator's would.
        yield Cluster(servers, redis_server, proxy, Settings(churnops_home=home, redis_url=env["REDIS_URL"]))
    finally:
        for server in servers:
            stop_churnops(server)
        proxy.stop()


@dataclass
class Burst:
    statuses: list[int]
    refused: list[httpx.Response]
    seconds: float
    slowest: float

    @property
    def accepted(self) -> int:
        return self.statuses.count(200)


def burst(cluster: Cluster, key: NewKey, count: int, threads: int = 15) -> Burst:
    """`count` GET /v1/models spread round-robin over the three servers, as fast as they answer."""
    statuses: list[int] = []
    refused: list[httpx.Response] = []
    latencies: list[float] = []
    lock = threading.Lock()
    clients = [
        httpx.Client(base_url=s.url, timeout=10, headers={"X-API-Key": key.key}) for s in cluster.servers
    ]

    def one(i: int) -> None:
        started = time.monotonic()
        response = clients[i % 3].get("/v1/models")
        with lock:
            latencies.append(time.monotonic() - started)
            statuses.append(response.status_code)
            if response.status_code == 429:
                refused.append(response)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    seconds = time.monotonic() - started
    for client in clients:
        client.close()
    return Burst(statuses, refused, seconds, max(latencies))


def regenerated(seconds: float) -> int:
    return math.floor(seconds / INTERVAL) + 1


def decisions(cluster: Cluster) -> dict[str, float]:
    totals: dict[str, float] = {}
    for server in cluster.servers:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        for outcome, value in re.findall(r'rate_limit_decisions_total\{outcome="(\w+)"\} (\S+)', text):
            totals[outcome] = totals.get(outcome, 0.0) + float(value)
    return totals


def test_lua_gcra_matches_the_core_arithmetic(redis_server: RedisServer) -> None:
    async def run() -> tuple[list[int], float]:
        buckets = RedisBuckets(redis_server.url, timeout_s=0.5)
        try:
            grants = [await buckets.take("lua-check", Rate(100, 60), 30) for _ in range(5)]
        finally:
            await buckets.close()
        return [g.granted for g in grants], grants[-1].retry_after

    granted, retry_after = asyncio.run(run())
    assert granted[:3] == [30, 30, 30]
    assert granted[3] in (10, 11)  # the rest of the burst (+1 if 0.6 s passed)
    assert granted[4] in (0, 1)
    assert 0 < retry_after <= 0.6


def test_the_default_deadline_gives_up_in_milliseconds(cluster: Cluster) -> None:
    cluster.proxy.command("delay 2")

    async def run() -> float:
        buckets = RedisBuckets(f"redis://127.0.0.1:{cluster.proxy.port}/0")  # default 5 ms
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match="within 5 ms"):
                await buckets.take("deadline", Rate(100, 60), 1)
            return time.monotonic() - started
        finally:
            await buckets.close()

    try:
        waited = asyncio.run(run())
    finally:
        cluster.proxy.command("delay 0")
    assert waited < 0.1, waited


def test_one_key_shared_by_three_processes(cluster: Cluster) -> None:
    key = make_key(cluster.settings, "predict", rate_limit="100/minute")
    before = decisions(cluster)
    result = burst(cluster, key, 150)
    time.sleep(1.2)
    after = decisions(cluster)
    local = {k: after.get(k, 0) - before.get(k, 0) for k in ("fallback_allowed", "fallback_limited")}
    print(f"150 requests in {result.seconds:.2f} s: {result.accepted} accepted; local decisions {local}")
    assert result.accepted <= 100 + regenerated(result.seconds)
    # A 5 ms deadline missed on a busy box answers from the local share (counted): never more.
    assert result.accepted >= 100 - local["fallback_limited"]
    assert set(result.statuses) == {200, 429}
    for response in result.refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-policy"] == '"key";q=100;w=60'
        assert re.fullmatch(r'"key";r=0;t=\d+', response.headers["ratelimit"])
        assert response.json()["error"]["code"] == "rate_limited"


def test_two_keys_are_independent(cluster: Cluster) -> None:
    spent, fresh = (make_key(cluster.settings, "predict", rate_limit="20/minute") for _ in range(2))
    assert burst(cluster, spent, 30).accepted <= 20 + 1
    assert burst(cluster, fresh, 20).accepted == 20


def test_a_burst_across_a_window_boundary_is_not_doubled(cluster: Cluster) -> None:
    key = make_key(cluster.settings, "predict", rate_limit="100/minute")
    time.sleep((58.5 - time.time() % 60) % 60)  # the last 1.5 s of a wall-clock minute
    before = burst(cluster, key, 100)
    time.sleep(max(0.0, 60.5 - time.time() % 60) if time.time() % 60 > 30 else 0.5)  # into the next
    after = burst(cluster, key, 100)
    elapsed = before.seconds + after.seconds + 2.0
    assert before.accepted == 100
    assert after.accepted <= regenerated(elapsed), (after.accepted, elapsed)


def test_revocation_reaches_every_process_within_two_seconds(cluster: Cluster) -> None:
    key = make_key(cluster.settings, "predict", rate_limit="100000/minute")
    headers = {"X-API-Key": key.key}
    for server in cluster.servers:
        assert httpx.get(f"{server.url}/v1/models", headers=headers, timeout=5).status_code == 200
    revoke_key(cluster.settings, key.record.key_id)
    started = time.monotonic()
    pending = list(cluster.servers)
    while pending:
        pending = [s for s in pending if httpx.get(f"{s.url}/v1/models", headers=headers).status_code != 401]
        assert time.monotonic() - started < 2.0, f"{len(pending)} processes still accept a revoked key"
    print(f"revocation effective everywhere after {time.monotonic() - started:.2f} s")


def test_redis_answering_two_seconds_late(cluster: Cluster) -> None:
    """The limiter gives up within its deadline; no request waits for Redis."""
    before = decisions(cluster).get("fallback_allowed", 0.0)
    cluster.proxy.command("delay 2")
    try:
        key = make_key(cluster.settings, "predict", rate_limit="100000/minute")
        result = burst(cluster, key, 60, threads=6)
    finally:
        cluster.proxy.command("delay 0")
    assert result.accepted == 60
    assert result.slowest < 1.0, f"a request waited {result.slowest:.2f} s"  # 2 s if it waited for Redis
    time.sleep(1.2)
    assert decisions(cluster).get("fallback_allowed", 0.0) > before


def test_redis_killed_then_back(cluster: Cluster) -> None:
    cluster.redis.kill()
    try:
        time.sleep(0.2)
        down_key = make_key(cluster.settings, "predict", rate_limit="100/minute")
        down = burst(cluster, down_key, 150)
        assert set(down.statuses) <= {200, 429}  # served, under the local share: 33 each
        assert down.accepted <= 3 * (33 + regenerated(down.seconds))
        time.sleep(1.2)
        assert decisions(cluster).get("fallback_allowed", 0.0) > 0
        signed = make_key(cluster.settings, "predict", signed=True)
        assert signed.signing_secret is not None
        body = b'{"customer_id": "C0000001"}'
        url = f"{cluster.servers[0].url}/v1/predict"
        headers = sign_request("POST", url, body, signed.key, signed.signing_secret)
        refused = httpx.post(url, content=body, headers=headers | {"content-type": "application/json"})
        assert refused.status_code == 503, refused.text  # nonce store unreachable: fail closed
        assert "nonce" in refused.json()["error"]["message"]
    finally:
        cluster.redis.start()  # same port: the proxy reaches it again
    time.sleep(2.5)  # breakers half-open after 1 s and probe
    up_key = make_key(cluster.settings, "predict", rate_limit="100/minute")
    burst(cluster, make_key(cluster.settings, "predict"), 6)  # probes close every breaker
    shared_before = decisions(cluster)
    up = burst(cluster, up_key, 150)
    assert 97 <= up.accepted <= 100 + regenerated(up.seconds)  # shared again: more than 3 x 33
    time.sleep(1.2)
    after = decisions(cluster)
    assert after.get("limited", 0) - shared_before.get("limited", 0) >= 150 - up.accepted - 1
    print(f"down: {down.accepted}/150 accepted locally; back: {up.accepted}/150 in {up.seconds:.2f} s")


def test_cluster_logs_have_no_tracebacks(cluster: Cluster) -> None:
    for server in cluster.servers:
        assert "Traceback" not in Path(server.log).read_text()

"""Benchmark: materialize 100,000 entities x 20 features into Redis, then single-customer lookups.

Runs against its own `redis-server` on a free port (no persistence), stopped by
PID at the end. Prints the materialization seconds (goal < 3 s) and p50/p99
lookup latency in µs for the floor — a bare `redis.Redis().get(key)` plus the
same decode — then `RedisOnlineStore.get` and `AsyncRedisOnlineReader.get`,
with their ratio to the floor (goal <= 1.5x). Usage:
`python bench/bench_online.py [entities]`; about 30 s.
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

try:
    import uvloop
except ImportError:  # the serve extra brings it; without it only the asyncio loop is measured
    uvloop = None

from churnops.core.breaker import CircuitBreaker
from churnops.io.offline_store import SqlOfflineStore
from churnops.io.online_store import (
    DEPENDENCY_DOWN,
    AsyncRedisOnlineReader,
    RedisOnlineStore,
    decode_vector,
    vector_key,
)
from churnops.jobs.materialize import materialize
from churnops.serving.features import RedisFeatures
from churnops.settings import Settings

VERSION = "bench-online"
GOAL_MATERIALIZE_S = 3.0
GOAL_RATIO = 1.5
LOOKUPS = 4_000  # per round and method
ROUNDS = 5  # methods interleaved round by round, so drift on a shared machine hits all alike
PATHS = {
    "floor": "redis.Redis().get + decode (floor)",
    "store": "RedisOnlineStore.get",
    "async": "AsyncRedisOnlineReader.get (asyncio)",
    "async_uvloop": "AsyncRedisOnlineReader.get (uvloop)",
    "serving": "churnops read path (breaker, uvloop)",
}
TIMEOUTS: list[int] = []  # async reads that failed on the healthy server (the 5 ms budget exceeded)


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server; yields its URL and always stops it by PID."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(workdir), "--logfile", str(workdir / "redis.log")])
    try:
        for _ in range(250):
            try:
                with redis.Redis(port=port, socket_timeout=0.2) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def customers(rows: int) -> pd.DataFrame:
    """rows x 20 features: 14 floats, 1 int, 5 categorical strings."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"num_{i}": rng.random(rows) * 100 for i in range(14)})
    frame["support_calls"] = rng.integers(0, 10, rows)
    choices = np.array(["Month-to-month", "One year", "Two year", "Fiber optic", "DSL", "No"])
    for i in range(5):
        frame[f"cat_{i}"] = choices[rng.integers(0, len(choices), rows)]
    frame.insert(0, "customer_id", [f"C{i:08d}" for i in range(rows)])
    return frame


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return ordered[len(ordered) // 2] / 1e3, ordered[int(len(ordered) * 0.99)] / 1e3


def time_sync(lookup: Callable[[str], Any], ids: list[str]) -> list[int]:
    samples = []
    for entity in ids:
        start = time.perf_counter_ns()
        lookup(entity)
        samples.append(time.perf_counter_ns() - start)
    return samples


async def time_async(
    lookup: Callable[[str], Awaitable[Any]], ids: list[str], timeouts: list[int]
) -> list[int]:
    """Latency samples; a call over the reader's millisecond budget goes to `timeouts` instead."""
    samples = []
    for entity in ids:
        start = time.perf_counter_ns()
        try:
            await lookup(entity)
        except DEPENDENCY_DOWN:
            timeouts.append(time.perf_counter_ns() - start)
            continue
        samples.append(time.perf_counter_ns() - start)
    return samples


def lookups(url: str, ids: list[str]) -> dict[str, list[int]]:
    """Interleaved rounds of the lookup paths; returns latency samples per path."""
    raw = redis.Redis.from_url(url)
    store = RedisOnlineStore(url, VERSION)
    samples: dict[str, list[int]] = {name: [] for name in PATHS}

    def floor(entity: str) -> Any:
        blob = raw.get(vector_key(VERSION, entity))
        return decode_vector(blob) if isinstance(blob, bytes) else None

    async def async_round(round_ids: list[str]) -> list[int]:
        reader = AsyncRedisOnlineReader(url, VERSION)
        await reader.warm(1)  # as the service's lifespan would: the connection opened off the clock
        await time_async(reader.get, round_ids[:300], [])  # warm-up: caches
        try:
            return await time_async(reader.get, round_ids, TIMEOUTS)
        finally:
            await reader.close()

    async def serving_round(round_ids: list[str]) -> list[int]:
        """What /v1/predict does for one customer: the service's FeatureSource, in-process cache off
        (TTL 0) so every call reaches Redis; breaker and fallback bookkeeping included."""
        reader = AsyncRedisOnlineReader(url, VERSION)
        features = RedisFeatures(reader, {}, CircuitBreaker(), cache_ttl_s=0.0, failures=reader.failures)
        await reader.warm(1)
        await time_async(features.get, round_ids[:300], [])
        try:
            return await time_async(features.get, round_ids, TIMEOUTS)
        finally:
            await features.close()

    time_sync(floor, ids[:500])
    time_sync(store.get, ids[:500])
    for round_ids in _rounds(ids):
        gc.collect()
        samples["floor"] += time_sync(floor, round_ids)
        samples["store"] += time_sync(store.get, round_ids)
        samples["async"] += asyncio.run(async_round(round_ids))
        if uvloop is not None:  # what uvicorn[standard] runs the service on
            samples["async_uvloop"] += uvloop.run(async_round(round_ids))
            samples["serving"] += uvloop.run(serving_round(round_ids))
    raw.close()
    store.close()
    return {name: values for name, values in samples.items() if values}


def _rounds(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), LOOKUPS):
        yield ids[start : start + LOOKUPS]


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        settings = Settings(churnops_home=Path(tmp) / "home", redis_url=url)
        settings.ensure_home()
        frame = customers(rows)
        offline = SqlOfflineStore(settings.offline_store_url)
        start = time.perf_counter()
        offline.write_features(VERSION, "bench", frame, "customer_id", datetime.now(UTC))
        offline.close()
        print(f"offline store: {rows:,} x 20 features written in {time.perf_counter() - start:.2f} s (setup)")
        result = materialize(settings, VERSION)
        verdict = "ok" if result["seconds"] < GOAL_MATERIALIZE_S else "OVER GOAL"
        print(
            f"materialize {result['entities']:,} entities: {result['seconds']:.2f} s "
            f"(read {result['read_seconds']:.2f} s, write {result['write_seconds']:.2f} s; "
            f"goal < {GOAL_MATERIALIZE_S} s: {verdict})"
        )
        ids = random.Random(1).choices(frame["customer_id"].tolist(), k=LOOKUPS * ROUNDS)
        report(lookups(url, ids))


def report(samples: dict[str, list[int]]) -> None:
    floor_p50, floor_p99 = percentiles(samples["floor"])
    print(f"{'lookup (µs)':38s} {'p50':>6s} {'p99':>6s}  ratio to floor p50 / p99")
    for key, values in samples.items():
        p50, p99 = percentiles(values)
        ratio = p50 / floor_p50
        verdict = "" if key == "floor" else ("ok" if ratio <= GOAL_RATIO else "OVER GOAL")
        print(f"{PATHS[key]:38s} {p50:6.0f} {p99:6.0f}  {ratio:5.2f}x / {p99 / floor_p99:5.2f}x  {verdict}")
    slowest = max(*samples["floor"], *samples["store"]) / 1e3
    calls = sum(len(v) for k, v in samples.items() if k.startswith("async")) + len(TIMEOUTS)
    print(f"slowest sync lookup: {slowest:,.0f} µs")
    print(f"async calls over the 5 ms deadline on the healthy server: {len(TIMEOUTS)} of {calls:,}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

"""No training/serving skew: materialized Redis vectors equal the offline store's latest, value and type."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from churnops.core.params import OnlineStoreParams
from churnops.core.synthetic import generate_customers
from churnops.errors import NotFound
from churnops.io.offline_store import SqlOfflineStore
from churnops.io.online_store import RedisOnlineStore, vector_key
from churnops.jobs.materialize import iter_latest_batches, materialize
from churnops.settings import Settings
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

VERSION = "synthetic-noskew"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ID = "customer_id"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, home: Path, redis_server: RedisServer) -> Iterator[Settings]:
    """Both offline backends: the embedded SQLite file and a throwaway PostgreSQL database."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()  # every run writes the same feature-set version again
    if request.param == "sqlite":
        yield Settings(churnops_home=home, redis_url=redis_server.url)
        return
    import psycopg

    name = f"churnops_noskew_{os.getpid()}_{time.monotonic_ns()}"
    admin = "host=127.0.0.1 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield Settings(churnops_home=home, redis_url=redis_server.url, database_url=url)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _customers(rows: int) -> pd.DataFrame:
    """Synthetic customers plus the awkward values: NaN, None, ints, unicode ids and text."""
    frame = generate_customers(rows, seed=5).drop(columns=["churn", "true_churn_probability"])
    frame.loc[0, "total_charges"] = np.nan
    frame.loc[1, "region"] = None
    frame.loc[2, ID] = "ü:id/with spaces"
    frame.loc[3, "contract"] = "Zwei Jahre – ünïcode"
    frame["support_calls"] = frame["support_calls"].astype("int64")
    return frame


def _fill_offline(settings: Settings, frame: pd.DataFrame) -> SqlOfflineStore:
    offline = SqlOfflineStore(settings.offline_store_url)
    offline.write_features(VERSION, "synthetic", frame, ID, T0)
    newer = frame.iloc[::3].assign(monthly_charges=frame["monthly_charges"].iloc[::3] + 1.5)
    offline.write_features(VERSION, "synthetic", newer, ID, T0 + timedelta(days=30))
    backfill = frame.iloc[::5].assign(tenure_months=-1)  # older snapshot, written last: must not win
    offline.write_features(VERSION, "synthetic", backfill, ID, T0 - timedelta(days=30))
    return offline


def test_online_vectors_equal_offline_latest_after_materialize(settings: Settings) -> None:
    frame = _customers(3_000)
    offline = _fill_offline(settings, frame)
    calls: list[tuple[int, int]] = []
    result = materialize(settings, progress=lambda done, total: calls.append((done, total)))
    latest = offline.latest_vectors(VERSION)
    offline.close()

    assert result["store"] == "redis"
    assert result["version"] == VERSION
    assert result["entities"] == len(latest) == len(frame)
    assert calls[0] == (0, len(frame))
    assert calls[-1] == (len(frame), len(frame))
    online = RedisOnlineStore(settings.online_store_url, VERSION)
    try:
        ids = list(latest)
        assert online.get_many(ids) == [latest[i] for i in ids]
        for entity in ids:
            got = online.get(entity)
            assert got == latest[entity], entity
            assert _types(got) == _types(latest[entity]), entity
        assert 0 < online.client.ttl(vector_key(VERSION, ids[0])) <= OnlineStoreParams().ttl_seconds
    finally:
        online.close()


def _types(vector: Any) -> dict[str, type]:
    return {name: type(value) for name, value in vector.items()}


def test_materialize_uses_the_ttl_from_params(settings: Settings) -> None:
    _fill_offline(settings, _customers(50)).close()
    result = materialize(settings, VERSION, params=OnlineStoreParams(ttl_seconds=120))
    online = RedisOnlineStore(settings.online_store_url, VERSION)
    try:
        assert result["ttl_seconds"] == 120
        assert 0 < online.client.ttl(vector_key(VERSION, "ü:id/with spaces")) <= 120
    finally:
        online.close()


def test_unknown_or_missing_feature_sets_are_named(settings: Settings) -> None:
    with pytest.raises(NotFound, match="no feature sets"):
        materialize(settings)
    _fill_offline(settings, _customers(20)).close()
    with pytest.raises(NotFound, match=f"'nope' is not in the offline store \\(known: {VERSION}\\)"):
        materialize(settings, "nope")


def test_memory_store_explains_and_writes_nothing(home: Path) -> None:
    result = materialize(Settings(churnops_home=home))
    assert result["store"] == "memory"
    assert result["entities"] == 0
    assert "each serving process loads" in result["message"]
    assert not (home / "features.db").exists()  # not even the offline store was opened


def test_batches_cover_every_entity_once_without_streaming(settings: Settings) -> None:
    offline = _fill_offline(settings, _customers(40))

    class LatestOnly:  # a store that predates `iter_latest`
        def latest_vectors(self, version: str) -> dict[str, dict[str, Any]]:
            return offline.latest_vectors(version)

    try:
        batches = list(iter_latest_batches(LatestOnly(), VERSION, 7))  # type: ignore[arg-type]
        assert [len(b) for b in batches] == [7, 7, 7, 7, 7, 5]
        assert dict(item for batch in batches for item in batch) == offline.latest_vectors(VERSION)
    finally:
        offline.close()

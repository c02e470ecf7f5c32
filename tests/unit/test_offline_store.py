"""SqlOfflineStore on an embedded SQLite file: writes, newest vector per entity, versions, chunks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from churnops.io.offline_store import SqlOfflineStore, feature_rows, feature_sets

pytestmark = pytest.mark.unit

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlOfflineStore]:
    store = SqlOfflineStore(f"sqlite:///{tmp_path / 'features.db'}")
    yield store
    store.close()


def frame(tenure: list[float], ids: list[object] | None = None) -> pd.DataFrame:
    ids = ids if ids is not None else [f"c{i}" for i in range(len(tenure))]
    return pd.DataFrame({"id": ids, "tenure": tenure, "plan": ["basic"] * len(tenure)})


def test_write_returns_rows_and_latest_vectors_reads_them_back(store: SqlOfflineStore) -> None:
    assert store.write_features("v1", "small", frame([1.0, 2.0]), "id", T0) == 2
    assert store.latest_vectors("v1") == {
        "c0": {"tenure": 1.0, "plan": "basic"},
        "c1": {"tenure": 2.0, "plan": "basic"},
    }


def test_latest_vectors_returns_the_newest_row_per_entity(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0, 2.0, 3.0]), "id", T0)
    store.write_features("v1", "small", frame([10.0, 20.0], ids=["c0", "c2"]), "id", T0 + timedelta(days=1))
    latest = store.latest_vectors("v1")
    assert {k: v["tenure"] for k, v in latest.items()} == {"c0": 10.0, "c1": 2.0, "c2": 20.0}
    assert store.count_rows("v1") == 5  # the history is kept, only the read picks the newest


def test_newest_is_by_event_time_not_write_order(store: SqlOfflineStore) -> None:
    # A backfill of an older snapshot written after a newer one must not replace the newer values.
    store.write_features("v1", "small", frame([10.0, 20.0]), "id", T0 + timedelta(days=1))
    store.write_features("v1", "small", frame([1.0, 2.0]), "id", T0)
    assert {k: v["tenure"] for k, v in store.latest_vectors("v1").items()} == {"c0": 10.0, "c1": 20.0}


def test_same_event_time_keeps_the_last_write(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0]), "id", T0)
    store.write_features("v1", "small", frame([2.0]), "id", T0)
    assert store.latest_vectors("v1")["c0"]["tenure"] == 2.0


def test_id_column_is_not_stored_as_a_value_and_ids_become_text(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0, 2.0], ids=[101, 102]), "id", T0)
    latest = store.latest_vectors("v1")
    assert set(latest) == {"101", "102"}
    assert all("id" not in values for values in latest.values())


def test_missing_values_become_null(store: SqlOfflineStore) -> None:
    data = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "tenure": [np.nan, 1.0, 2.0],
            "plan": ["basic", None, pd.NA],
        }
    )
    store.write_features("v1", "small", data, "id", T0)
    latest = store.latest_vectors("v1")
    assert latest["a"] == {"tenure": None, "plan": "basic"}
    assert latest["b"] == {"tenure": 1.0, "plan": None}
    assert latest["c"]["plan"] is None


def test_numpy_scalars_are_converted(store: SqlOfflineStore) -> None:
    data = pd.DataFrame(
        {
            "id": ["a", "b"],
            "count": np.array([3, 4], dtype=np.int64),
            "ratio": np.array([0.5, 0.25], dtype=np.float32),
            "flag": np.array([True, False]),
        }
    )
    store.write_features("v1", "small", data, "id", T0)
    latest = store.latest_vectors("v1")
    assert latest["a"] == {"count": 3, "ratio": 0.5, "flag": True}
    assert type(latest["a"]["count"]) is int
    assert type(latest["b"]["flag"]) is bool


def test_count_rows_per_version_and_in_total(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0, 2.0, 3.0]), "id", T0)
    store.write_features("v2", "small", frame([1.0, 2.0]), "id", T0)
    assert store.count_rows("v1") == 3
    assert store.count_rows("v2") == 2
    assert store.count_rows() == 5
    assert store.count_rows("v3") == 0


def test_versions_are_isolated(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0]), "id", T0)
    store.write_features("v2", "small", frame([99.0]), "id", T0 + timedelta(days=1))
    assert store.latest_vectors("v1") == {"c0": {"tenure": 1.0, "plan": "basic"}}
    assert store.latest_vectors("v2") == {"c0": {"tenure": 99.0, "plan": "basic"}}
    assert store.latest_vectors("unknown") == {}


def test_feature_set_is_registered_once_with_its_columns(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0]), "id", T0)
    store.write_features("v1", "small", frame([2.0]), "id", T0 + timedelta(days=1))
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(feature_sets.c.version, feature_sets.c.columns)).all()
    assert rows == [("v1", '["tenure","plan"]')]


def test_rows_carry_the_snapshot_time(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0, 2.0]), "id", T0)
    with store.engine.connect() as conn:
        stamps = conn.execute(sa.select(feature_rows.c.event_timestamp)).scalars().all()
    assert [s.replace(tzinfo=UTC) for s in stamps] == [T0, T0]


def test_chunking_writes_every_row(tmp_path: Path) -> None:
    store = SqlOfflineStore(f"sqlite:///{tmp_path / 'chunks.db'}", chunk_rows=3)
    try:
        assert store.write_features("v1", "small", frame([float(i) for i in range(10)]), "id", T0) == 10
        assert store.count_rows("v1") == 10
        latest = store.latest_vectors("v1")
        assert {k: v["tenure"] for k, v in latest.items()} == {f"c{i}": float(i) for i in range(10)}
    finally:
        store.close()


def test_store_reopens_existing_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'features.db'}"
    first = SqlOfflineStore(url)
    first.write_features("v1", "small", frame([1.0]), "id", T0)
    first.close()
    second = SqlOfflineStore(url)
    try:
        assert second.count_rows("v1") == 1
    finally:
        second.close()

"""The offline-store contract, run against embedded SQLite and a real PostgreSQL.

PostgreSQL: a throwaway database per module on 127.0.0.1 (override the admin URL
with CHURNOPS_TEST_POSTGRES_URL), emptied before each test. An unreachable server
fails the PostgreSQL cases within seconds instead of skipping them: CI starts one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, DataError, NotFound
from churnops.io.migrations import head_revision
from churnops.io.offline_store import (
    PoolLimits,
    SqlOfflineStore,
    feature_rows,
    feature_sets,
    metadata,
    normalize_url,
    open_offline_store,
    upgrade,
)
from tests.pg import throwaway_database

pytestmark = pytest.mark.integration


TABLES = {"feature_sets", "feature_rows", "feature_metadata", "feature_lineage"}
T1, T2, T3, T4 = (datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2, 3, 4))


# -- backends --------------------------------------------------------------------------


def _psycopg(url: str, **kwargs: object) -> psycopg.Connection:
    from tests.pg import connect

    return connect(url, **kwargs)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh database for this module, dropped (FORCE) at the end."""
    with throwaway_database() as url:
        yield url


def _empty_pg(url: str) -> str:
    """The module database with an empty public schema: every test starts unmigrated."""
    with _psycopg(url) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'features.db'}"
    return _empty_pg(request.getfixturevalue("pg_database"))


@pytest.fixture
def store(backend_url: str) -> Iterator[SqlOfflineStore]:
    store = open_offline_store(backend_url)
    yield store
    store.close()


def frame(tenure: list[float], ids: list[object] | None = None) -> pd.DataFrame:
    ids = ids if ids is not None else [f"c{i}" for i in range(len(tenure))]
    return pd.DataFrame({"id": ids, "tenure": tenure, "plan": ["basic"] * len(tenure)})


def tenures(store: SqlOfflineStore, version: str = "v1") -> dict[str, float]:
    return {entity: values["tenure"] for entity, values in store.latest_vectors(version).items()}


# -- writes and the latest vector ------------------------------------------------------


def test_round_trip_turns_missing_into_null_and_numpy_into_python(store: SqlOfflineStore) -> None:
    data = pd.DataFrame(
        {
            "id": np.array([101, 102, 103]),
            "tenure": [np.nan, 1.5, 2.0],
            "count": np.array([3, 4, 5], dtype=np.int64),
            "ratio": np.array([0.5, 0.25, 0.125], dtype=np.float32),
            "flag": np.array([True, False, True]),
            "plan": ["basic", None, pd.NA],
            "mixed": pd.Series([np.int64(7), np.float64("nan"), "x"], dtype=object),
        }
    )
    assert store.write_features("v1", "small", data, "id", T1) == 3
    latest = store.latest_vectors("v1")
    assert set(latest) == {"101", "102", "103"}
    assert latest["101"] == {
        "tenure": None,
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "plan": "basic",
        "mixed": 7,
    }
    assert latest["102"]["plan"] is None
    assert latest["102"]["mixed"] is None
    assert latest["103"]["plan"] is None
    assert type(latest["102"]["count"]) is int
    assert type(latest["102"]["flag"]) is bool


def test_newest_event_time_wins_and_ties_keep_the_last_write(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([10.0, 20.0]), "id", T2)
    store.write_features("v1", "small", frame([1.0, 2.0]), "id", T1)  # a backfill must not win
    store.write_features("v1", "small", frame([30.0], ids=["c1"]), "id", T2)  # same time: last write
    assert tenures(store) == {"c0": 10.0, "c1": 30.0}
    assert store.count_rows("v1") == 5


def test_versions_are_isolated(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0]), "id", T1)
    store.write_features("v2", "small", frame([99.0]), "id", T2)
    assert tenures(store, "v1") == {"c0": 1.0}
    assert tenures(store, "v2") == {"c0": 99.0}
    assert store.latest_vectors("unknown") == {}
    assert (store.count_rows("v1"), store.count_rows("v2"), store.count_rows()) == (1, 1, 2)


def test_per_row_event_time_column_is_used_and_not_stored(store: SqlOfflineStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    data = frame([1.0, 2.0, 3.0], ids=["a", "a", "b"])
    # 01:00+02:00 is 23:00 UTC the day before: older than T1 once normalised.
    data["seen"] = pd.Series([T1, datetime(2024, 1, 1, 1, 0, tzinfo=plus_two), "2024-01-03T00:00:00Z"])
    store.write_features("v1", "small", data, "id", "seen")
    assert tenures(store) == {"a": 1.0, "b": 3.0}
    assert "seen" not in store.latest_vectors("v1")["a"]
    with store.engine.connect() as conn:
        columns = conn.execute(sa.select(feature_sets.c.columns)).scalar_one()
        stamps = conn.execute(sa.select(feature_rows.c.event_timestamp).order_by(feature_rows.c.id)).scalars()
        assert [s.astimezone(UTC) if s.tzinfo else s.replace(tzinfo=UTC) for s in stamps] == [
            T1,
            T1 - timedelta(hours=1),
            T3,
        ]
    assert columns == '["tenure","plan"]'


def test_bad_event_times_and_ids_name_the_column(store: SqlOfflineStore) -> None:
    data = frame([1.0, 2.0])
    data["seen"] = pd.Series([T1, "not a time"])
    with pytest.raises(DataError, match="seen"):
        store.write_features("v1", "small", data, "id", "seen")
    with pytest.raises(DataError, match="id"):
        store.write_features("v1", "small", frame([1.0], ids=[None]), "id", T1)
    with pytest.raises(DataError, match="when"):
        store.write_features("v1", "small", frame([1.0]), "id", "when")
    with pytest.raises(DataError, match="numbers"):
        store.write_features("v1", "small", frame([1.0]).assign(when=1704067200), "id", "when")
    assert store.count_rows() == 0  # nothing half-written


# -- governance ------------------------------------------------------------------------

SPEC = DatasetSpec.model_validate(
    {
        "name": "small",
        "id_column": "id",
        "target": {"column": "churn", "positive": 1},
        "features": {"numerical": ["tenure"], "categorical": ["plan", "gender"]},
        "pii": ["gender"],
    }
)


def test_metadata_and_lineage_describe_every_feature(store: SqlOfflineStore) -> None:
    assert store.write_metadata("v1", SPEC, pii=["plan"], owner="ml-team") == 3
    assert store.write_metadata("v1", SPEC, owner="ml-team") == 3  # rewrite replaces, never duplicates
    described = {row["name"]: row for row in store.read_metadata("v1")}
    assert set(described) == {"tenure", "plan", "gender"}
    assert described["gender"]["is_pii"] is True
    assert described["gender"]["privacy_level"] == "pii"
    assert described["plan"]["is_pii"] is False
    assert described["plan"]["privacy_level"] == "internal"
    assert described["tenure"]["dtype"] == "numerical"
    assert described["plan"]["dtype"] == "categorical"
    assert {r["source"] for r in described.values()} == {"small"}
    assert {r["transformation"] for r in described.values()} == {"raw"}
    assert {r["owner"] for r in described.values()} == {"ml-team"}
    lineage = store.read_lineage("v1")
    assert [(r["feature"], r["source_column"], r["source_dataset"]) for r in lineage] == [
        ("gender", "gender", "small"),
        ("plan", "plan", "small"),
        ("tenure", "tenure", "small"),
    ]
    assert store.read_metadata("v2") == []


def test_metadata_refuses_pii_outside_the_features(store: SqlOfflineStore) -> None:
    with pytest.raises(ConfigError, match="email"):
        store.write_metadata("v1", SPEC, pii=["email"])


# -- streaming -------------------------------------------------------------------------


def test_iter_latest_batches_cover_every_entity_exactly_once(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([float(i) for i in range(2_500)]), "id", T1)
    store.write_features("v1", "small", frame([-1.0] * 700), "id", T2)  # history for the first 700
    store.write_features("v2", "small", frame([5.0]), "id", T3)
    batches = list(store.iter_latest("v1", batch_size=300))
    assert all(0 < len(batch) <= 300 for batch in batches)
    entities = [entity for batch in batches for entity, _ in batch]
    assert len(entities) == len(set(entities)) == 2_500
    assert {e: v for batch in batches for e, v in batch} == store.latest_vectors("v1")
    assert store.pool_status()["checked_out"] == 0


def test_abandoned_stream_returns_its_connection(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([float(i) for i in range(50)]), "id", T1)
    stream = store.iter_latest("v1", batch_size=10)
    assert len(next(stream)) == 10
    assert store.pool_status()["checked_out"] == 1
    stream.close()
    assert store.pool_status()["checked_out"] == 0


# -- migrations ------------------------------------------------------------------------


def _revision(url: str) -> str | None:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema_once_and_again_is_a_no_op(backend_url: str) -> None:
    assert _revision(backend_url) is None
    assert upgrade(backend_url) == head_revision()
    engine = sa.create_engine(normalize_url(backend_url))
    try:
        assert TABLES | {"alembic_version"} <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [
                head_revision()
            ]
            # The migration and the Core schema the code queries must not drift apart.
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        store = open_offline_store(backend_url)
        store.write_features("v1", "small", frame([1.0]), "id", T1)
        store.close()
        assert upgrade(backend_url) == head_revision()
        assert _revision(backend_url) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(feature_rows)).scalar_one() == 1
    finally:
        engine.dispose()


def test_store_migrates_an_empty_database_on_first_use(store: SqlOfflineStore, backend_url: str) -> None:
    assert _revision(backend_url) is None  # opening alone touches nothing
    assert store.count_rows() == 0
    assert _revision(backend_url) == head_revision()


def test_schema_from_a_newer_churnops_is_refused_with_a_clear_error(backend_url: str) -> None:
    upgrade(backend_url)
    engine = sa.create_engine(normalize_url(backend_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    finally:
        engine.dispose()
    store = open_offline_store(backend_url)
    try:
        with pytest.raises(ConfigError, match="'f00d', unknown to this churnops"):
            store.count_rows()
    finally:
        store.close()


def test_processes_starting_together_on_an_empty_database_migrate_it_once(backend_url: str) -> None:
    # Service workers all start at once: each must find the schema at head, none may fail.
    script = "import sys; from churnops.io.offline_store import upgrade; print(upgrade(sys.argv[1]))"
    workers = [
        subprocess.Popen([sys.executable, "-c", script, backend_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0]
    assert outputs == [head_revision()] * 3
    assert _revision(backend_url) == head_revision()


def test_database_from_before_migrations_is_adopted(backend_url: str) -> None:
    engine = sa.create_engine(normalize_url(backend_url))
    try:
        metadata.create_all(engine, tables=[feature_sets, feature_rows])  # what the old store did
        with engine.begin() as conn:
            conn.execute(
                feature_rows.insert().values(
                    feature_set_version="v1", entity_id="c0", event_timestamp=T1, values='{"tenure": 4.0}'
                )
            )
    finally:
        engine.dispose()
    store = open_offline_store(backend_url)
    try:
        assert tenures(store) == {"c0": 4.0}
        assert store.write_metadata("v1", SPEC) == 3
        assert _revision(backend_url) == head_revision()
    finally:
        store.close()


def test_urls_are_normalised_and_unknown_drivers_refused() -> None:
    assert normalize_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match=r"mysql\+pymysql://u:\*\*\*@h/db"):
        open_offline_store("mysql+pymysql://u:secret@h/db")


# -- point in time ---------------------------------------------------------------------


def _timeline(store: SqlOfflineStore) -> pd.DataFrame:
    """A's features at t1 = 1.0 and t3 = 3.0, B's first row at t3; newer rows written first."""
    store.write_features("v1", "small", frame([3.0, 30.0], ids=["A", "B"]), "id", T3)
    store.write_features("v1", "small", frame([1.0], ids=["A"]), "id", T1)
    labels = pd.DataFrame(
        {
            "entity_id": ["A", "A", "A", "B", "B", "C", "A"],
            "label_timestamp": [T2, T4, T1, T2, T3, T4, T1 - timedelta(seconds=1)],
            "churned": [0, 1, 0, 1, 0, 1, 1],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    return store.training_set("v1", labels)


def test_training_set_sees_only_rows_at_or_before_each_label(store: SqlOfflineStore) -> None:
    result = _timeline(store)
    assert list(result.columns) == [
        "entity_id",
        "label_timestamp",
        "churned",
        "feature_timestamp",
        "tenure",
        "plan",
    ]
    assert list(result.index) == list(range(7))
    expected_tenure = [1.0, 3.0, 1.0, np.nan, 30.0, np.nan, np.nan]  # a leaking join gives A@t2 = 3.0
    np.testing.assert_array_equal(result["tenure"].to_numpy(), expected_tenure)
    assert result["plan"].isna().tolist() == [False, False, False, True, False, True, True]
    stamps = result["feature_timestamp"]
    assert stamps.tolist()[:3] == [pd.Timestamp(T1), pd.Timestamp(T3), pd.Timestamp(T1)]
    assert stamps.isna().tolist() == [False, False, False, True, False, True, True]
    assert (stamps.dropna() <= result["label_timestamp"][stamps.notna()]).all()
    assert result["churned"].tolist() == [0, 1, 0, 1, 0, 1, 1]


def test_training_set_is_identical_on_both_backends(tmp_path: Path, pg_database: str) -> None:
    results = []
    for url in (f"sqlite:///{tmp_path / 'pit.db'}", _empty_pg(pg_database)):
        store = open_offline_store(url)
        try:
            results.append(_timeline(store))
        finally:
            store.close()
    pd.testing.assert_frame_equal(results[0], results[1])


def test_training_set_takes_naive_and_offset_label_times_as_instants(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0], ids=["A"]), "id", T2)
    labels = pd.DataFrame(
        {
            "entity_id": ["A", "A", "A"],
            # naive = UTC; 01:00+02:00 on Jan 2 is 23:00 UTC on Jan 1, before the row.
            "label_timestamp": ["2024-01-02 00:00:00", "2024-01-02T01:00:00+02:00", "2024-01-02T00:30:00Z"],
        }
    )
    assert store.training_set("v1", labels)["tenure"].isna().tolist() == [False, True, False]


def test_training_set_errors_name_what_is_wrong(store: SqlOfflineStore) -> None:
    labels = pd.DataFrame({"entity_id": ["A"], "label_timestamp": [T1]})
    with pytest.raises(NotFound, match="v9"):
        store.training_set("v9", labels)
    store.write_features("v1", "small", frame([1.0]), "id", T1)
    with pytest.raises(DataError, match="label_timestamp"):
        store.training_set("v1", labels.drop(columns="label_timestamp"))
    with pytest.raises(DataError, match="entity_id"):
        store.training_set("v1", labels.rename(columns={"entity_id": "customer"}))
    with pytest.raises(DataError, match="tenure"):
        store.training_set("v1", labels.assign(tenure=1.0))
    assert store.training_set("v1", labels.iloc[:0]).empty
    assert store.pool_status()["checked_out"] == 0


# -- pool ------------------------------------------------------------------------------


def _operation(store: SqlOfflineStore, i: int) -> None:
    kind = i % 4
    if kind == 0:
        store.latest_vectors("v1")
    elif kind == 1:
        store.count_rows("v1")
    elif kind == 2:
        store.write_features("v1", "small", frame([float(i)], ids=[f"w{i}"]), "id", T1)
    else:
        stream = store.iter_latest("v1", batch_size=2)
        next(stream, None)
        stream.close()


def test_pool_is_clean_after_sequential_and_concurrent_use(store: SqlOfflineStore) -> None:
    store.write_features("v1", "small", frame([1.0, 2.0, 3.0]), "id", T1)
    for i in range(200):
        _operation(store, i)
    assert store.pool_status()["checked_out"] == 0
    start = threading.Barrier(50, timeout=30)

    def together(i: int) -> None:
        start.wait()
        _operation(store, i)

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(together, range(50)))
    status = store.pool_status()
    assert status["checked_out"] == 0
    assert set(status) == {"size", "checked_out", "overflow", "checked_in"}
    assert store.count_rows("v1") == 3 + 50 + 12  # every write landed: 200/4 sequential, 12 concurrent


def test_concurrent_first_writes_of_a_new_version_all_land(store: SqlOfflineStore) -> None:
    start = threading.Barrier(8, timeout=30)

    def write(i: int) -> int:
        start.wait()
        return store.write_features("v9", "small", frame([float(i)], ids=[f"c{i}"]), "id", T1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(write, range(8))) == 8
    assert store.count_entities("v9") == 8
    assert store.feature_set_versions() == ["v9"]


def test_feature_set_versions_are_listed_newest_first(store: SqlOfflineStore) -> None:
    assert store.feature_set_versions() == []
    store.write_features("old", "small", frame([1.0, 2.0]), "id", T1)
    store.write_features("new", "small", frame([1.0]), "id", T1)
    store.write_features("old", "small", frame([3.0]), "id", T2)  # history, not a new entity
    assert store.feature_set_versions() == ["new", "old"]
    assert (store.count_entities("old"), store.count_entities("new"), store.count_entities("x")) == (2, 1, 0)


def test_exhausted_pool_times_out_in_seconds(backend_url: str) -> None:
    store = open_offline_store(
        backend_url, limits=PoolLimits(pool_size=1, max_overflow=0, pool_timeout_s=0.5)
    )
    try:
        store.upgrade()
        with store.engine.connect():
            began = time.monotonic()
            with pytest.raises(sa.exc.TimeoutError):
                store.count_rows()
            assert time.monotonic() - began < 3
        assert store.count_rows() == 0
        assert store.pool_status()["checked_out"] == 0
    finally:
        store.close()


def test_postgres_statements_have_a_timeout(pg_database: str) -> None:
    store = open_offline_store(_empty_pg(pg_database), limits=PoolLimits(statement_timeout_ms=300))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "300ms"
            began = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.exec_driver_sql("SELECT pg_sleep(5)")
            assert time.monotonic() - began < 3
    finally:
        store.close()


def test_unresponsive_postgres_fails_within_the_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP, never answers the PostgreSQL handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = open_offline_store(
            f"postgresql://postgres@127.0.0.1:{port}/none", limits=PoolLimits(connect_timeout_s=2)
        )
        try:
            began = time.monotonic()
            with pytest.raises(sa.exc.OperationalError):
                store.count_rows()
            assert time.monotonic() - began < 10
        finally:
            store.close()

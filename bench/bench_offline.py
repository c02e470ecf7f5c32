"""Benchmark: bulk loads into the offline store (PostgreSQL COPY, SQLite chunked insert).

Loads 1,000,000 feature rows x 20 features into a throwaway PostgreSQL database with
`write_features` (JSON encoding + COPY, one transaction), and compares it with a
reference measured in the same run on the same rows: SQLAlchemy executemany of
50,000 rows, scaled to the full count. Also times the embedded SQLite path
(chunked executemany) on 200,000 rows. The database is dropped at the end.

Usage: `python bench/bench_offline.py [rows]`; the admin URL defaults to
postgresql://postgres@127.0.0.1:5432/postgres (override: CHURNOPS_BENCH_POSTGRES_URL).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from psycopg import sql

from churnops.io.feature_frames import feature_records
from churnops.io.offline_store import feature_rows, open_offline_store
from churnops.io.sql_backends import insert_many

T = TypeVar("T")

ADMIN_URL = os.environ.get("CHURNOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BUDGET_COPY_S = 60.0
REFERENCE_ROWS = 50_000
SQLITE_ROWS = 200_000
STAMP = datetime(2024, 1, 1, tzinfo=UTC)
COLUMNS = ("feature_set_version", "entity_id", "event_timestamp", "values")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def features(rows: int) -> pd.DataFrame:
    """rows x (id + 16 numerical + 4 categorical) with 1% missing values."""
    rng = np.random.default_rng(0)
    data: dict[str, object] = {"id": [f"c{i:08d}" for i in range(rows)]}
    for j in range(16):
        column = rng.normal(50, 20, rows).round(4)
        column[rng.random(rows) < 0.01] = np.nan
        data[f"num_{j}"] = column
    for j in range(4):
        data[f"cat_{j}"] = rng.choice(["basic", "plus", "premium", "enterprise"], rows)
    return pd.DataFrame(data)


@contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"churnops_bench_{secrets.token_hex(6)}"
    admin_dsn = sa.make_url(ADMIN_URL).render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_copy(url: str, frame: pd.DataFrame) -> float:
    store = open_offline_store(url)
    try:
        store.upgrade()
        _, seconds = timed(lambda: store.write_features("bench", "bench", frame, "id", STAMP))
        assert store.count_rows("bench") == len(frame)
        return seconds
    finally:
        store.close()


def postgres_executemany(url: str, frame: pd.DataFrame) -> float:
    """Reference: the same rows, same encoding, loaded by executemany instead of COPY."""
    store = open_offline_store(url)
    columns = [c for c in frame.columns if c != "id"]
    try:
        store.upgrade()

        def load() -> None:
            records = feature_records(frame, "id", columns, "reference", STAMP, store.chunk_rows)
            with store.engine.begin() as conn:
                insert_many(conn, feature_rows, COLUMNS, records, 5_000)

        _, seconds = timed(load)
        return seconds
    finally:
        store.close()


def sqlite_insert(frame: pd.DataFrame) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_offline_store(f"sqlite:///{Path(tmp) / 'features.db'}")
        try:
            store.upgrade()
            _, seconds = timed(lambda: store.write_features("bench", "bench", frame, "id", STAMP))
            return seconds
        finally:
            store.close()


def encode_only(frame: pd.DataFrame) -> float:
    columns = [c for c in frame.columns if c != "id"]
    _, seconds = timed(lambda: sum(1 for _ in feature_records(frame, "id", columns, "v", STAMP, 50_000)))
    return seconds


def main(rows: int) -> None:
    frame, build_s = timed(lambda: features(rows))
    print(f"frame                {rows:,} rows x {frame.shape[1] - 1} features built in {build_s:.2f} s")
    encode_s = encode_only(frame.iloc[:SQLITE_ROWS]) * rows / SQLITE_ROWS
    with throwaway_database() as url:
        copy_s = postgres_copy(url, frame)
        reference_s = postgres_executemany(url, frame.iloc[:REFERENCE_ROWS])
    sqlite_s = sqlite_insert(frame.iloc[:SQLITE_ROWS])
    scaled_s = reference_s * rows / REFERENCE_ROWS
    verdict = "ok" if copy_s < BUDGET_COPY_S else "OVER BUDGET"
    line("PostgreSQL COPY", copy_s, rows, f"(budget {BUDGET_COPY_S:.0f} s: {verdict})")
    line("  of which encoding", encode_s, rows, f"(JSON per row, measured on {SQLITE_ROWS:,}, scaled)")
    line("executemany (ref)", reference_s, REFERENCE_ROWS, f"(scaled to {rows:,}: {scaled_s:.1f} s)")
    line("SQLite insert", sqlite_s, SQLITE_ROWS)
    print(f"ratio COPY / executemany reference (same rows)   {copy_s / scaled_s:6.2f}")
    print(f"speed-up of COPY over executemany                {scaled_s / copy_s:6.1f}x")
    if copy_s >= BUDGET_COPY_S:
        sys.exit(1)


def line(step: str, seconds: float, rows: int, note: str = "") -> None:
    print(f"{step:<20} {seconds:6.2f} s  {rows / seconds:12,.0f} rows/s  {note}".rstrip())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)

"""Offline feature store: every entity's raw feature rows with event time and feature-set version.

One SQLAlchemy Core schema serves the embedded SQLite file and (later) PostgreSQL.
Values are stored as one JSON document per row so any dataset spec fits without
schema changes; the feature-set version names which definitions produced them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import pandas as pd
import sqlalchemy as sa

metadata = sa.MetaData()

feature_sets = sa.Table(
    "feature_sets",
    metadata,
    sa.Column("version", sa.String(80), primary_key=True),
    sa.Column("spec_name", sa.String(80), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),  # JSON list of feature names
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

feature_rows = sa.Table(
    "feature_rows",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("feature_set_version", sa.String(80), nullable=False),
    sa.Column("entity_id", sa.String(128), nullable=False),
    sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("values", sa.Text, nullable=False),
    sa.Index("ix_feature_rows_entity_time", "feature_set_version", "entity_id", "event_timestamp"),
)


class OfflineStore(Protocol):
    """What the pipeline writes and the scoring service reads."""

    def write_features(
        self, version: str, spec_name: str, frame: pd.DataFrame, id_column: str, event_timestamp: datetime
    ) -> int: ...

    def latest_vectors(self, version: str) -> dict[str, dict[str, Any]]: ...

    def close(self) -> None: ...


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/NA become null, numpy scalars become Python ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value.item() if hasattr(value, "item") else value


class SqlOfflineStore:
    """Offline store over a SQLAlchemy engine (SQLite embedded by default)."""

    def __init__(self, url: str, chunk_rows: int = 50_000) -> None:
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {"connect_timeout": 5}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        self.chunk_rows = chunk_rows
        metadata.create_all(self.engine)

    def write_features(
        self, version: str, spec_name: str, frame: pd.DataFrame, id_column: str, event_timestamp: datetime
    ) -> int:
        """Append one row per entity, all stamped with the snapshot time; returns rows written."""
        columns = [c for c in frame.columns if c != id_column]
        with self.engine.begin() as conn:
            self._register_set(conn, version, spec_name, columns)
            for chunk in self._chunks(frame, id_column, columns, version, event_timestamp):
                conn.execute(feature_rows.insert(), chunk)
        return len(frame)

    def latest_vectors(self, version: str) -> dict[str, dict[str, Any]]:
        """Each entity's newest feature vector (by event time, then write order) for one version."""
        # Newest by event time, not by row id: a backfilled older snapshot must not shadow a newer one.
        rank = sa.func.row_number().over(
            partition_by=feature_rows.c.entity_id,
            order_by=(feature_rows.c.event_timestamp.desc(), feature_rows.c.id.desc()),
        )
        ranked = (
            sa.select(feature_rows.c.entity_id, feature_rows.c["values"], rank.label("rank"))
            .where(feature_rows.c.feature_set_version == version)
            .subquery()
        )
        query = sa.select(ranked.c.entity_id, ranked.c["values"]).where(ranked.c.rank == 1)
        with self.engine.connect() as conn:
            return {entity: orjson.loads(values) for entity, values in conn.execute(query)}

    def count_rows(self, version: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(feature_rows)
        if version is not None:
            query = query.where(feature_rows.c.feature_set_version == version)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def _register_set(self, conn: sa.Connection, version: str, spec_name: str, columns: list[str]) -> None:
        exists = conn.execute(
            sa.select(feature_sets.c.version).where(feature_sets.c.version == version)
        ).first()
        if exists is None:
            conn.execute(
                feature_sets.insert().values(
                    version=version,
                    spec_name=spec_name,
                    columns=orjson.dumps(columns).decode(),
                    created_at=datetime.now(UTC),
                )
            )

    def _chunks(
        self, frame: pd.DataFrame, id_column: str, columns: list[str], version: str, stamp: datetime
    ) -> Iterator[list[Mapping[str, Any]]]:
        ids = frame[id_column].astype(str).tolist()
        values = frame[columns].astype(object).to_numpy()
        for start in range(0, len(ids), self.chunk_rows):
            stop = start + self.chunk_rows
            yield [
                {
                    "feature_set_version": version,
                    "entity_id": entity,
                    "event_timestamp": stamp,
                    "values": orjson.dumps(dict(zip(columns, map(_clean, row), strict=True))).decode(),
                }
                for entity, row in zip(ids[start:stop], values[start:stop], strict=True)
            ]

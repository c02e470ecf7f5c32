"""Offline feature store: every entity's raw feature rows with event time and feature-set version.

One SQLAlchemy Core schema serves PostgreSQL in production and an embedded SQLite
file by default; Alembic (`churnops.io.migrations`) creates and evolves it on first
use. Values are stored as one JSON document per row so any dataset spec fits
without schema changes; the feature-set version names which definitions produced
them. Beside the rows the store keeps governance metadata (owner, privacy level,
PII flag) and lineage (feature -> source column) per feature-set version.

All times are stored in UTC; naive datetimes are taken as UTC.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import pandas as pd
import sqlalchemy as sa

from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, NotFound
from churnops.io.feature_frames import assemble, check_ids, check_no_clash, feature_records, label_rows
from churnops.io.sql_backends import PoolLimits, normalize_url
from churnops.io.sql_schema import feature_lineage, feature_metadata, feature_rows, feature_sets, metadata
from churnops.io.sql_store import SqlStore

__all__ = [
    "DEPENDENCY_DOWN",
    "OfflineStore",
    "PoolLimits",
    "SqlOfflineStore",
    "feature_lineage",
    "feature_metadata",
    "feature_rows",
    "feature_sets",
    "metadata",
    "normalize_url",
    "open_offline_store",
    "upgrade",
]


# Per-connection scratch table for point-in-time joins; never part of the migrated schema.
_labels = sa.Table(
    "churnops_pit_labels",
    sa.MetaData(),
    sa.Column("position", sa.BigInteger, primary_key=True),
    sa.Column("entity_id", sa.String(128), nullable=False),
    sa.Column("label_timestamp", sa.DateTime(timezone=True), nullable=False),
    prefixes=["TEMPORARY"],
)

_ROW_COLUMNS = ("feature_set_version", "entity_id", "event_timestamp", "values")

Batch = list[tuple[str, dict[str, Any]]]


class OfflineStore(Protocol):
    """What the pipeline writes and the scoring service reads."""

    def write_features(
        self,
        version: str,
        spec_name: str,
        frame: pd.DataFrame,
        id_column: str,
        event_timestamp: datetime | str,
    ) -> int: ...

    def write_metadata(self, version: str, spec: DatasetSpec, pii: Iterable[str] = ()) -> int: ...

    def latest_vectors(self, version: str) -> dict[str, dict[str, Any]]: ...

    def iter_latest(self, version: str, batch_size: int = 10_000) -> Generator[Batch]: ...

    def training_set(self, version: str, entity_times: pd.DataFrame) -> pd.DataFrame: ...

    def close(self) -> None: ...


# What a caller's circuit breaker counts as "the database is down or too slow".
DEPENDENCY_DOWN: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.TimeoutError,
    TimeoutError,
    OSError,
)


def open_offline_store(
    url: str, chunk_rows: int = 50_000, limits: PoolLimits | None = None
) -> SqlOfflineStore:
    """The offline store for a URL: `sqlite:///FILE` (embedded) or `postgresql[+psycopg]://...`."""
    return SqlOfflineStore(url, chunk_rows=chunk_rows, limits=limits)


def upgrade(url: str) -> str:
    """Run the Alembic migrations on the store at `url` (for `churnops db upgrade`); returns the head."""
    store = open_offline_store(url)
    try:
        return store.upgrade()
    finally:
        store.close()


class SqlOfflineStore:
    """Offline store over a SQLAlchemy engine: COPY on PostgreSQL, chunked executemany on SQLite."""

    def __init__(self, url: str, chunk_rows: int = 50_000, limits: PoolLimits | None = None) -> None:
        self.sql = SqlStore(url, limits)
        self.url, self.backend, self.engine = self.sql.url, self.sql.backend, self.sql.engine
        self.chunk_rows = chunk_rows

    # -- schema and pool -----------------------------------------------------------

    def upgrade(self) -> str:
        """Bring the schema to the newest migration now; returns the head revision."""
        return self.sql.upgrade()

    def pool_status(self) -> dict[str, int]:
        """Connection pool gauges for metrics: size, checked_out, overflow, checked_in."""
        return self.sql.pool_status()

    def close(self) -> None:
        self.sql.close()

    # -- writes ----------------------------------------------------------------------

    def write_features(
        self,
        version: str,
        spec_name: str,
        frame: pd.DataFrame,
        id_column: str,
        event_timestamp: datetime | str,
    ) -> int:
        """Append one row per frame row; returns rows written.

        `event_timestamp` is one time for every row (the snapshot time) or the name of a
        column of `frame` holding each row's event time; neither it nor `id_column` is stored
        as a feature value.
        """
        time_column = event_timestamp if isinstance(event_timestamp, str) else None
        check_ids(frame, id_column, time_column)
        columns = [c for c in frame.columns if c not in (id_column, time_column)]
        records = feature_records(frame, id_column, columns, version, event_timestamp, self.chunk_rows)
        with self._ready().begin() as conn:
            self._register_set(conn, version, spec_name, columns)
            self.backend.bulk_insert(conn, feature_rows, _ROW_COLUMNS, records, self.chunk_rows)
        return len(frame)

    def write_metadata(
        self,
        version: str,
        spec: DatasetSpec,
        pii: Iterable[str] = (),
        *,
        owner: str | None = None,
        source_dataset: str | None = None,
    ) -> int:
        """Record each feature's governance metadata and lineage for a version (replacing any earlier).

        `pii` adds columns to the spec's own `pii` list. Returns the number of features described.
        """
        flagged = set(spec.pii) | set(pii)
        unknown = sorted(flagged - set(spec.feature_columns))
        if unknown:
            raise ConfigError(f"pii: {unknown} not among the features of spec {spec.name!r}")
        described = _metadata_rows(version, spec, flagged, owner)
        dataset = source_dataset or spec.name
        lineage = [
            {"feature_set_version": version, "feature": n, "source_column": n, "source_dataset": dataset}
            for n in spec.feature_columns
        ]
        with self._ready().begin() as conn:
            for table in (feature_metadata, feature_lineage):
                conn.execute(table.delete().where(table.c.feature_set_version == version))
            conn.execute(feature_metadata.insert(), described)
            conn.execute(feature_lineage.insert(), lineage)
        return len(described)

    # -- reads -----------------------------------------------------------------------

    def latest_vectors(self, version: str) -> dict[str, dict[str, Any]]:
        """Each entity's newest feature vector (by event time, then write order) for one version."""
        with self._ready().connect() as conn:
            return {entity: orjson.loads(values) for entity, values in conn.execute(_latest_query(version))}

    def latest_vector(self, version: str, entity_id: str) -> dict[str, Any] | None:
        """One entity's newest vector (the online store's read-through on a cache miss); uses the index."""
        query = (
            sa.select(feature_rows.c["values"])
            .where(feature_rows.c.feature_set_version == version, feature_rows.c.entity_id == entity_id)
            .order_by(feature_rows.c.event_timestamp.desc(), feature_rows.c.id.desc())
            .limit(1)
        )
        with self._ready().connect() as conn:
            values = conn.execute(query).scalar_one_or_none()
        return None if values is None else dict(orjson.loads(values))

    def iter_latest(self, version: str, batch_size: int = 10_000) -> Generator[Batch]:
        """Stream the newest vectors in batches of `(entity_id, values)`, never holding them all.

        A server-side cursor on PostgreSQL; the connection returns to the pool when the
        iterator is exhausted or closed.
        """
        with self._ready().connect() as conn:
            result = conn.execution_options(yield_per=batch_size).execute(_latest_query(version))
            for part in result.partitions():
                yield [(entity, orjson.loads(values)) for entity, values in part]

    def read_metadata(self, version: str) -> list[dict[str, Any]]:
        """The governance metadata of a version's features, by feature name."""
        return self._rows_of(feature_metadata, version, feature_metadata.c.name)

    def read_lineage(self, version: str) -> list[dict[str, Any]]:
        """Where each feature of a version comes from, by feature name."""
        return self._rows_of(feature_lineage, version, feature_lineage.c.feature)

    def feature_set_versions(self) -> list[str]:
        """Registered feature-set versions, newest first."""
        query = sa.select(feature_sets.c.version).order_by(
            feature_sets.c.created_at.desc(), feature_sets.c.version
        )
        with self._ready().connect() as conn:
            return [str(version) for version in conn.execute(query).scalars()]

    def count_entities(self, version: str) -> int:
        """Distinct entities with at least one row in `version`."""
        query = sa.select(sa.func.count(sa.distinct(feature_rows.c.entity_id))).where(
            feature_rows.c.feature_set_version == version
        )
        with self._ready().connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_rows(self, version: str | None = None) -> int:
        """Stored rows (history included) of one version, or of all."""
        query = sa.select(sa.func.count()).select_from(feature_rows)
        if version is not None:
            query = query.where(feature_rows.c.feature_set_version == version)
        with self._ready().connect() as conn:
            return int(conn.execute(query).scalar_one())

    def training_set(
        self,
        version: str,
        entity_times: pd.DataFrame,
        *,
        entity_column: str = "entity_id",
        time_column: str = "label_timestamp",
    ) -> pd.DataFrame:
        """Point-in-time correct features: each row's values as of its label time, never later.

        Returns `entity_times` (same rows, same order, fresh index) plus `feature_timestamp`
        (event time of the row used) and one column per feature; a row with no feature row
        at or before its label time gets missing values.
        """
        entities, stamps = label_rows(entity_times, entity_column, time_column)
        with self._ready().begin() as conn:
            columns = self._registered_columns(conn, version)
            check_no_clash(entity_times, columns)
            # A failed call leaves its temp table on a pooled SQLite connection; PostgreSQL rolls it back.
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.backend.temp_schema}.{_labels.name}")
            _labels.create(conn)
            rows = zip(range(len(entities)), entities, stamps, strict=True)
            self.backend.bulk_insert(conn, _labels, [c.name for c in _labels.c], rows, self.chunk_rows)
            self.backend.analyze(conn, _labels)
            picked = conn.execute(_point_in_time_query(version, self.backend.supports_lateral)).tuples().all()
            _labels.drop(conn)
        return assemble(entity_times, columns, picked)

    # -- internals -------------------------------------------------------------------

    def _ready(self) -> sa.Engine:
        """The engine, once the schema is at head (migrated on first use)."""
        return self.sql.ready()

    def _register_set(self, conn: sa.Connection, version: str, spec_name: str, columns: list[str]) -> None:
        # ON CONFLICT: two jobs writing a new version at once must both succeed, first one registers.
        register = self.backend.insert_ignoring_duplicates(feature_sets).values(
            version=version,
            spec_name=spec_name,
            columns=orjson.dumps(columns).decode(),
            created_at=datetime.now(UTC),
        )
        conn.execute(register)

    def _registered_columns(self, conn: sa.Connection, version: str) -> list[str]:
        query = sa.select(feature_sets.c.columns).where(feature_sets.c.version == version)
        columns = conn.execute(query).scalar_one_or_none()
        if columns is None:
            raise NotFound(f"feature set version {version!r} is not in the offline store")
        names: list[str] = orjson.loads(columns)
        return names

    def _rows_of(self, table: sa.Table, version: str, order: sa.ColumnElement[Any]) -> list[dict[str, Any]]:
        query = sa.select(table).where(table.c.feature_set_version == version).order_by(order)
        with self._ready().connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]


# -- queries ---------------------------------------------------------------------------


def _latest_query(version: str) -> sa.Select[str, str]:
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
    return sa.select(ranked.c.entity_id, ranked.c["values"]).where(ranked.c.rank == 1)


def _point_in_time_query(version: str, lateral: bool) -> sa.Select[int, datetime | None, str | None]:
    """Per label row, the newest feature row at or before its label time (ties: last write).

    Both forms walk the (version, entity, time) index backwards from the label time, so a
    row stamped after the label can never be chosen, however the rows were written.
    PostgreSQL takes a LATERAL join (one index probe per label, values read in place);
    SQLite, which has no LATERAL, picks the row id in a correlated subquery and joins by it.
    """
    newest = (
        sa.select(feature_rows.c.id, feature_rows.c.event_timestamp, feature_rows.c["values"])
        .where(
            feature_rows.c.feature_set_version == version,
            feature_rows.c.entity_id == _labels.c.entity_id,
            feature_rows.c.event_timestamp <= _labels.c.label_timestamp,
        )
        .order_by(feature_rows.c.event_timestamp.desc(), feature_rows.c.id.desc())
        .limit(1)
    )
    if lateral:
        row = newest.lateral("newest")
        return (
            sa.select(_labels.c.position, row.c.event_timestamp, row.c["values"])
            .select_from(_labels.outerjoin(row, sa.true()))
            .order_by(_labels.c.position)
        )
    row_id = newest.with_only_columns(feature_rows.c.id).correlate(_labels).scalar_subquery()
    picks = sa.select(_labels.c.position, row_id.label("row_id")).subquery("picks")
    return (
        sa.select(picks.c.position, feature_rows.c.event_timestamp, feature_rows.c["values"])
        .select_from(picks.outerjoin(feature_rows, feature_rows.c.id == picks.c.row_id))
        .order_by(picks.c.position)
    )


# -- governance ------------------------------------------------------------------------


def _metadata_rows(
    version: str, spec: DatasetSpec, pii: set[str], owner: str | None
) -> list[Mapping[str, Any]]:
    kinds = [("numerical", n) for n in spec.features.numerical]
    kinds += [("categorical", n) for n in spec.features.categorical]
    return [
        {
            "feature_set_version": version,
            "name": name,
            "description": f"{kind} feature {name!r} of dataset spec {spec.name!r}",
            "dtype": kind,
            "owner": owner,
            "privacy_level": "pii" if name in pii else "internal",
            "is_pii": name in pii,
            "source": spec.name,
            "transformation": "raw",
        }
        for kind, name in kinds
    ]

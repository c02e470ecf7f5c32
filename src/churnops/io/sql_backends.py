"""What differs between the SQL backends of the stores: engine, pool limits, bulk loads.

One `Backend` per database, chosen once from the URL (`backend_for`): PostgreSQL
(psycopg 3, production) loads with COPY; embedded SQLite with chunked executemany.
Everything else (schema, queries) is shared SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import QueuePool, StaticPool

from churnops.errors import ConfigError

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4}
SERVER_KEEPALIVES = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4"


@dataclass(frozen=True)
class PoolLimits:
    """Connection limits: a slow or dead database must fail a call in seconds, not hang it."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 5.0  # wait for a free pooled connection
    connect_timeout_s: int = 5  # PostgreSQL: TCP connect + startup
    statement_timeout_ms: int = 120_000  # PostgreSQL: any one statement, COPY included
    sqlite_lock_timeout_s: float = 30.0  # SQLite: wait for another writer's file lock
    # A round trip before each checkout, so a server restart costs a reconnect, not a failed call.
    # Off only where a failed call is already handled (the ledger writer spools and retries).
    pre_ping: bool = True

    def pool_args(self) -> dict[str, Any]:
        """The bounded QueuePool both backends use."""
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.pool_timeout_s,
        }


class Backend(Protocol):
    """The database-specific part of a SQL store."""

    name: str
    supports_lateral: bool  # LATERAL joins (PostgreSQL) for per-row index probes
    temp_schema: str  # where temporary tables live, to drop one without touching a real table

    def insert_ignoring_duplicates(self, table: sa.Table) -> sa.Insert: ...

    def create_engine(self, url: sa.URL, limits: PoolLimits) -> sa.Engine: ...

    def bulk_insert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        chunk_rows: int,
        binary: bool = False,
    ) -> None: ...

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None: ...

    def insert_keys(self, conn: sa.Connection, keys: Sequence[dict[str, Any]]) -> None:
        """Wrapped data keys, skipping duplicates and any key made before its customer's erasure."""
        ...

    def pool_status(self, engine: sa.Engine) -> dict[str, int]: ...


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the only PostgreSQL driver churnops ships)."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def backend_for(url: sa.URL) -> Backend:
    """The backend for a (normalised) URL; anything but SQLite or psycopg PostgreSQL is refused."""
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        return SqliteBackend()
    if url.drivername == "postgresql+psycopg":
        return PostgresBackend()
    raise ConfigError(
        f"store URL {url.render_as_string(hide_password=True)!r}: use sqlite:///FILE"
        " or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
    )


def queue_pool_status(engine: sa.Engine) -> dict[str, int]:
    """Gauges of a bounded pool; other pools (in-memory SQLite) hold one shared connection."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return {"size": 1, "checked_out": 0, "overflow": 0, "checked_in": 1}
    # QueuePool counts overflow from -pool_size; below zero only means "not all opened yet".
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "overflow": max(pool.overflow(), 0),
        "checked_in": pool.checkedin(),
    }


def batched(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    """Consecutive lists of at most `size` rows (itertools.batched arrives in Python 3.12)."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def insert_many(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    chunk_rows: int,
) -> None:
    """Portable bulk insert: one executemany per chunk, memory bounded by `chunk_rows`."""
    statement = table.insert()
    for chunk in batched(rows, chunk_rows):
        conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in chunk])


# A key created before its customer's erasure must never land after it (a racing writer).
_KEY_GUARD = (
    "WHERE NOT EXISTS (SELECT 1 FROM privacy_state p WHERE p.subject = k.subject "
    "AND p.erased_at_us >= k.created_at_us) ON CONFLICT DO NOTHING"
)
_KEY_COLUMNS = ("subject", "epoch", "writer_id", "wrapped", "created_at_us")


class SqliteBackend:
    """Embedded SQLite file: chunked executemany, file-lock timeout, a bounded pool."""

    name = "sqlite"
    supports_lateral = False
    temp_schema = "temp"

    def insert_ignoring_duplicates(self, table: sa.Table) -> sa.Insert:
        return sqlite_dialect.insert(table).on_conflict_do_nothing()

    def create_engine(self, url: sa.URL, limits: PoolLimits) -> sa.Engine:
        connect_args = {"timeout": limits.sqlite_lock_timeout_s, "check_same_thread": False}
        if url.database in (None, "", ":memory:"):
            # One shared connection, or every pooled connection would see its own empty database.
            return sa.create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(
            url,
            connect_args=connect_args,
            poolclass=QueuePool,
            **limits.pool_args(),
        )

    def bulk_insert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        chunk_rows: int,
        binary: bool = False,
    ) -> None:
        insert_many(conn, table, columns, rows, chunk_rows)

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        """Nothing to do: SQLite's planner reads the index, not table statistics, for our joins."""

    def insert_keys(self, conn: sa.Connection, keys: Sequence[dict[str, Any]]) -> None:
        # bandit B608: only the module constant _KEY_GUARD is formatted in; values are bound
        statement = sa.text(
            "INSERT INTO customer_keys (subject, epoch, writer_id, wrapped, created_at_us) SELECT * FROM "
            "(SELECT :subject AS subject, :epoch AS epoch, :writer_id AS writer_id, :wrapped AS wrapped, "
            f":created_at_us AS created_at_us) AS k {_KEY_GUARD}"  # nosec B608
        )
        conn.execute(statement, list(keys))

    def pool_status(self, engine: sa.Engine) -> dict[str, int]:
        return queue_pool_status(engine)


class PostgresBackend:
    """PostgreSQL through psycopg 3: COPY for bulk loads, bounded pool, connect and statement timeouts."""

    name = "postgresql"
    supports_lateral = True
    temp_schema = "pg_temp"

    def insert_ignoring_duplicates(self, table: sa.Table) -> sa.Insert:
        return postgresql_dialect.insert(table).on_conflict_do_nothing()

    def create_engine(self, url: sa.URL, limits: PoolLimits) -> sa.Engine:
        return sa.create_engine(
            url,
            **limits.pool_args(),
            pool_pre_ping=limits.pre_ping,
            connect_args=self._connect_args(url, limits),
        )

    def bulk_insert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        chunk_rows: int,
        binary: bool = False,
    ) -> None:
        """COPY ... FROM STDIN on the connection's own transaction (commits or rolls back with it).

        `binary` sends PostgreSQL's binary COPY format (about half the client CPU of text: no
        escaping, no bytea hex) for callers whose values match their column types exactly, as the
        ledger's do; other callers keep text, which also parses numpy and pandas scalars."""
        quote = conn.dialect.identifier_preparer
        names = ", ".join(quote.quote(c) for c in columns)
        statement = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
        driver = cast(Any, conn.connection.driver_connection)  # psycopg.Connection
        types = copy_types(conn.dialect, table, columns, driver.adapters) if binary else None
        if types:
            statement += " (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            if types:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def insert_keys(self, conn: sa.Connection, keys: Sequence[dict[str, Any]]) -> None:
        """One statement per batch: the keys travel as arrays (a customer's first records are common)."""
        columns = {name: [k[name] for k in keys] for name in _KEY_COLUMNS}
        # bandit B608: only the module constant _KEY_GUARD is formatted in; values are bound
        statement = sa.text(
            "INSERT INTO customer_keys (subject, epoch, writer_id, wrapped, created_at_us) "
            "SELECT * FROM unnest(CAST(:subject AS varchar[]), CAST(:epoch AS integer[]), "
            "CAST(:writer_id AS varchar[]), CAST(:wrapped AS bytea[]), CAST(:created_at_us AS bigint[])) "
            f"AS k(subject, epoch, writer_id, wrapped, created_at_us) {_KEY_GUARD}"  # nosec B608
        )
        conn.execute(statement, columns)

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        # Autovacuum never analyzes temporary tables; without statistics the planner guesses their size.
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")

    def pool_status(self, engine: sa.Engine) -> dict[str, int]:
        return queue_pool_status(engine)

    @staticmethod
    def _connect_args(url: sa.URL, limits: PoolLimits) -> dict[str, Any]:
        """Our timeouts, unless the URL sets its own (`connect_timeout`, `options=-c statement_timeout`)."""
        args: dict[str, Any] = {}
        if "application_name" not in url.query:
            args["application_name"] = "churnops"
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = limits.connect_timeout_s
        # Keepalives both ways: a partition (no RST, no FIN) must end a connection in ~30 s, not the
        # kernel's 2 h. The client stops waiting on a dead server; the server ends a session whose
        # client vanished mid-COPY, whose uncommitted rows a replay of the same ids would wait on.
        args |= {name: value for name, value in KEEPALIVES.items() if name not in url.query}
        options = str(url.query.get("options", ""))
        if "statement_timeout" not in options:
            options = f"{options} -c statement_timeout={limits.statement_timeout_ms}".strip()
        if "tcp_keepalives" not in options:
            options = f"{options} {SERVER_KEEPALIVES}"
        args["options"] = options
        return args


def copy_types(dialect: Any, table: sa.Table, columns: Sequence[str], adapters: Any) -> list[str] | None:
    """PostgreSQL type names of `columns` for a binary COPY, or None when one has no binary dumper
    psycopg knows (the caller then falls back to text). Worked out once per table and columns."""
    key = (table.name, tuple(columns))
    if key not in _COPY_TYPES:
        _COPY_TYPES[key] = _copy_types(dialect, table, columns, adapters)
    return _COPY_TYPES[key]


_COPY_TYPES: dict[tuple[str, tuple[str, ...]], list[str] | None] = {}


def _copy_types(dialect: Any, table: sa.Table, columns: Sequence[str], adapters: Any) -> list[str] | None:
    names = []
    for column in columns:
        name = table.c[column].type.compile(dialect=dialect).split("(")[0].strip().lower()
        if adapters.types.get(name) is None:
            return None
        names.append(name)
    return names

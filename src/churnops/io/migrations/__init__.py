"""Alembic migrations of the SQL stores, run from code (no alembic.ini).

`ensure_schema(engine)` brings a database to the newest revision on first use;
`churnops db upgrade` calls the same function. The scripts live next to this
file (`env.py`, `versions/`) and ship inside the wheel.
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from churnops.errors import ConfigError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent
# Any constant works; it only has to be the same in every process that migrates this database.
_PG_LOCK_KEY = 0x63686E6F  # "chno"
_PROCESS_LOCK = threading.Lock()


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config built in code: our script directory, bound to a connection or a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser treats '%' as interpolation; a percent-encoded password must survive.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision shipped with this churnops."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError(f"no Alembic revisions under {MIGRATIONS_DIR / 'versions'}")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision a database is at (None when it was never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: sa.Engine) -> str:
    """Upgrade the database to head unless it is there already; returns the head revision."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return head
    # Alembic's `context` is a module global: one migration at a time per process, then per database.
    with _PROCESS_LOCK, engine.connect() as conn:
        _lock_for_migration(conn)
        # Re-read under the lock: another process may have migrated while we waited.
        current = current_revision(conn)
        if current != head:
            _check_known(current)
            start = f"revision {current}" if current else "an empty schema"
            logger.info("migrating %s from %s to %s", engine.url.render_as_string(), start, head)
            command.upgrade(alembic_config(connection=conn), "head")
        conn.commit()
    return head


def _lock_for_migration(conn: sa.Connection) -> None:
    """Serialise migrations across processes (service workers all start on an empty database)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    elif conn.dialect.name == "sqlite":
        # pysqlite issues no BEGIN before DDL; IMMEDIATE takes the write lock before we read the revision.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _check_known(current: str | None) -> None:
    """Refuse a database migrated by a newer churnops instead of failing deep inside Alembic."""
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise ConfigError(
            f"database schema is at revision {current!r}, unknown to this churnops (head {head_revision()}):"
            " upgrade churnops"
        )

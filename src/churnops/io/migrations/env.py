"""Alembic environment, run by `churnops.io.migrations` (no alembic.ini).

The caller hands over an open connection in `config.attributes["connection"]`
so the migration runs inside its transaction (and under its lock); a URL in
`sqlalchemy.url` is the fallback, and offline mode prints the SQL for a DBA.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from churnops.io.sql_schema import metadata

config = context.config
target_metadata = metadata


def run_offline() -> None:
    """Emit the migration SQL instead of running it (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: sa.Connection) -> None:
    """Migrate through one connection; SQLite alters tables by copy-and-move (batch mode)."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("Alembic needs a connection in config.attributes or sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        run_on(conn)
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

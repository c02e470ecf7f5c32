"""`churnops db`: the SQL store's schema."""

from __future__ import annotations

import typer

from churnops.cli._common import database_errors, load_settings

app = typer.Typer(help="SQL store schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending Alembic migrations to the offline store's database (SQLite or PostgreSQL)."""
    from churnops.jobs.db import upgrade

    settings = load_settings()
    with database_errors():
        revision = upgrade(settings)
    typer.echo(f"database at revision {revision}")

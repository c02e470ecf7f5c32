"""Throwaway PostgreSQL databases on 127.0.0.1 (override the admin URL with CHURNOPS_TEST_POSTGRES_URL).

An unreachable server fails the test within seconds instead of skipping it: CI starts one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A plain psycopg connection that gives up after 3 s and fails (never skips) the test."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return psycopg.connect(dsn, connect_timeout=3, autocommit=True, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as err:
        pytest.fail(f"PostgreSQL not reachable at {sa.make_url(url).render_as_string()}: {err}")


@contextmanager
def throwaway_database(prefix: str = "churnops_test") -> Iterator[str]:
    """A fresh database, dropped (FORCE) afterwards; yields its SQLAlchemy URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with connect(ADMIN_URL) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with connect(ADMIN_URL) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def proxied(url: str, port: int) -> str:
    """The same database reached through a local proxy port."""
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

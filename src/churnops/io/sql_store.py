"""An engine on the SQL store, migrated to the newest schema on first use.

Every adapter on the SQL store (offline features, ledger, keys, change feed) opens one
of these with pool limits of its own, so a slow ledger write never waits behind a
feature read-through for a connection.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from churnops.io.migrations import ensure_schema
from churnops.io.sql_backends import Backend, PoolLimits, backend_for, normalize_url


class SqlStore:
    """One engine, its backend (SQLite or PostgreSQL) and the schema check."""

    def __init__(self, url: str, limits: PoolLimits | None = None) -> None:
        self.url = sa.make_url(normalize_url(url))
        self.backend: Backend = backend_for(self.url)
        self.engine = self.backend.create_engine(self.url, limits or PoolLimits())
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def ready(self) -> sa.Engine:
        """The engine, once the schema is at head."""
        if not self._migrated:
            self.upgrade()
        return self.engine

    def upgrade(self) -> str:
        """Bring the schema to the newest migration now; returns the head revision."""
        with self._migrate_lock:
            revision = ensure_schema(self.engine)
            self._migrated = True
        return revision

    def pool_status(self) -> dict[str, int]:
        return self.backend.pool_status(self.engine)

    def close(self) -> None:
        self.engine.dispose()

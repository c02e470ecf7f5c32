"""Helpers of the monitoring tests: a private copy of the session's trained home, traffic."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

MONITOR_TABLES = ("monitor_drift", "monitor_usage", "monitor_reports", "monitor_profiles")


def private_home(source: Path, target: Path) -> Path:
    """A copy of a trained CHURNOPS_HOME (registry, artifacts, features, ledger) whose monitoring tables
    and ledger start empty, so one module's counts never see another's. MLflow's artifact URIs still
    point at the source's files, which are only read."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("metrics", "spool*", "*.tmp"))
    engine = sa.create_engine(f"sqlite:///{target / 'features.db'}")
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            for table in MONITOR_TABLES:
                if table in tables:
                    conn.exec_driver_sql(f"DELETE FROM {table}")
            for table in ("ledger_records", "ledger_checkpoints", "feedback_labels"):
                if table in tables:  # append-only triggers: drop and let the schema stay (rows gone)
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete")
                    conn.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        engine.dispose()
    return target

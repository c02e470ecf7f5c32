"""Monitoring: reference profiles, drift counts, measured usage and computed reports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Service workers append one `monitor_drift` row per live slot and one `monitor_usage` row
every flush interval (a few seconds); windows are sums over rows, so workers and replicas
merge by construction. Workers (hourly) and `churnops monitor run` (each tick) roll old
rows up and purge past the retention of params.yaml, so these are not append-only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "monitor_profiles",
        sa.Column("fingerprint", sa.String(16), primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "monitor_drift",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("counts", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_monitor_drift_end", "monitor_drift", ["end_us"])
    op.create_table(
        "monitor_usage",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("predictions", sa.BigInteger, nullable=False),
        sa.Column("usage", sa.Text, nullable=False),
    )
    op.create_index("ix_monitor_usage_end", "monitor_usage", ["end_us"])
    op.create_table(
        "monitor_reports",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_monitor_reports_kind_at", "monitor_reports", ["kind", "at_us"])


def downgrade() -> None:
    op.drop_index("ix_monitor_reports_kind_at", "monitor_reports")
    op.drop_table("monitor_reports")
    op.drop_index("ix_monitor_usage_end", "monitor_usage")
    op.drop_table("monitor_usage")
    op.drop_index("ix_monitor_drift_end", "monitor_drift")
    op.drop_table("monitor_drift")
    op.drop_table("monitor_profiles")

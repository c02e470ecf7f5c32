"""Experiments: the current definition and bucket table of each, and every revision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("bucket_table", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("looks", sa.Text, nullable=True),
    )
    op.create_table(
        "experiment_history",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("bucket_table", sa.Text, nullable=False),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_experiment_history_name", "experiment_history", ["name", "revision"])


def downgrade() -> None:
    op.drop_table("experiment_history")
    op.drop_table("experiments")

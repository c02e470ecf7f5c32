"""Offline feature store: feature sets, feature rows, governance metadata and lineage.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Databases written before migrations existed (`metadata.create_all`) already hold
`feature_sets` and `feature_rows` with exactly this shape: they are adopted, not
recreated, so an existing embedded store keeps its history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("feature_sets", "feature_rows", "feature_metadata", "feature_lineage")


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "feature_sets" not in present:
        _create_feature_sets()
    if "feature_rows" not in present:
        _create_feature_rows()
    if "feature_metadata" not in present:
        _create_feature_metadata()
    if "feature_lineage" not in present:
        _create_feature_lineage()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)


def _create_feature_sets() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("version", sa.String(80), primary_key=True),
        sa.Column("spec_name", sa.String(80), nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def _create_feature_rows() -> None:
    op.create_table(
        "feature_rows",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("feature_set_version", sa.String(80), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=False),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("values", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_feature_rows_entity_time",
        "feature_rows",
        ["feature_set_version", "entity_id", "event_timestamp"],
    )


def _create_feature_metadata() -> None:
    op.create_table(
        "feature_metadata",
        sa.Column("feature_set_version", sa.String(80), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("privacy_level", sa.String(32), nullable=False),
        sa.Column("is_pii", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("transformation", sa.Text, nullable=False),
    )


def _create_feature_lineage() -> None:
    op.create_table(
        "feature_lineage",
        sa.Column("feature_set_version", sa.String(80), primary_key=True),
        sa.Column("feature", sa.String(128), primary_key=True),
        sa.Column("source_column", sa.String(128), primary_key=True),
        sa.Column("source_dataset", sa.String(256), nullable=False),
    )

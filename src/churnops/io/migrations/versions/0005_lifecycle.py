"""Lifecycle: the loop's state (the bake under way, the data already trained on, the last cycle).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Alias moves, approvals, rollbacks and cycles are ledger events (chained, append-only); this
table only holds what the next cycle needs to know, and may be rewritten. An index on the
ledger's `action` serves the model history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
    )
    # `churnops models history` reads the events by action among millions of predictions.
    op.create_index("ix_ledger_records_action", "ledger_records", ["action", "at_us"])


def downgrade() -> None:
    op.drop_index("ix_ledger_records_action", "ledger_records")
    op.drop_table("lifecycle_state")

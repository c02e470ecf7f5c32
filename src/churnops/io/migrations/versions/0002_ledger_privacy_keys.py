"""Prediction ledger, feedback labels, privacy, API keys and the change feed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

The ledger tables (`ledger_records`, `ledger_checkpoints`, `feedback_labels`) are
append-only: a trigger refuses UPDATE, DELETE and TRUNCATE on PostgreSQL, and UPDATE
and DELETE on SQLite. Erasure and retention never edit them; they destroy the data
keys in `customer_keys` (crypto-shredding), which the chain does not cover.

Grants for a dedicated service role on PostgreSQL (run once by the DBA; the trigger
holds even for the table owner, the grants make the intent explicit):

    REVOKE UPDATE, DELETE, TRUNCATE ON ledger_records, ledger_checkpoints, feedback_labels
      FROM churnops_service;
    GRANT SELECT, INSERT ON ledger_records, ledger_checkpoints, feedback_labels TO churnops_service;
    GRANT SELECT, INSERT, UPDATE, DELETE ON customer_keys, privacy_state, api_keys, change_log
      TO churnops_service;
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("ledger_records", "ledger_checkpoints", "feedback_labels")
BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    _ledger()
    _privacy()
    _keys_and_changes()
    _append_only(op.get_bind().dialect.name)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        elif dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS churnops_append_only()")
    for name in (
        "change_log",
        "api_keys",
        "privacy_state",
        "customer_keys",
        "feedback_labels",
        "ledger_checkpoints",
        "ledger_records",
    ):
        op.drop_table(name)


def _ledger() -> None:
    op.create_table(
        "ledger_records",
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("writer_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("subject", sa.String(32), nullable=True),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("experiment", sa.String(128), nullable=True),
        sa.Column("bucket", sa.Integer, nullable=True),
        sa.Column("role", sa.String(8), nullable=True),
        sa.Column("probability", sa.Double(), nullable=True),
        sa.Column("decision", sa.Boolean, nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("reasons", sa.Text, nullable=True),
        sa.Column("feature_source", sa.String(32), nullable=True),
        sa.Column("feature_hash", sa.String(64), nullable=True),
        sa.Column("key_epoch", sa.Integer, nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("action", sa.String(64), nullable=True),
        sa.Column("details", sa.Text, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("writer_id", "seq", name="uq_ledger_records_writer_seq"),
    )
    op.create_index("ix_ledger_records_at", "ledger_records", ["at_us"])
    op.create_index("ix_ledger_records_subject", "ledger_records", ["subject", "at_us"])
    op.create_table(
        "ledger_checkpoints",
        sa.Column("writer_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )
    op.create_table(
        "feedback_labels",
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("churned", sa.Boolean, nullable=False),
        sa.Column("observed_at_us", sa.BigInteger, nullable=False),
        sa.Column("received_at_us", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(128), nullable=True),
    )
    op.create_index("ix_feedback_labels_subject", "feedback_labels", ["subject"])


def _privacy() -> None:
    op.create_table(
        "customer_keys",
        sa.Column("subject", sa.String(32), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("writer_id", sa.String(32), primary_key=True),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "privacy_state",
        sa.Column("subject", sa.String(32), primary_key=True),
        sa.Column("opted_out_at_us", sa.BigInteger, nullable=True),
        sa.Column("erased_at_us", sa.BigInteger, nullable=True),
    )


def _keys_and_changes() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(24), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("rate_limit", sa.String(32), nullable=True),
        sa.Column("signed", sa.Boolean, nullable=False),
        sa.Column("signing_secret", sa.LargeBinary, nullable=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
    )
    op.create_table(
        "change_log",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
    )


def _append_only(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION churnops_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'churnops: % is append-only (% refused)', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        for table in APPEND_ONLY:  # per statement: refused even when it would touch no row
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION churnops_append_only()"
            )
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("update", "delete"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, 'churnops: {table} is append-only ({verb.upper()} refused)'); END"
                )

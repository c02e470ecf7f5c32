"""The SQL store's schema: one SQLAlchemy Core metadata for every table churnops keeps.

SQLite embedded, PostgreSQL in production; Alembic (`churnops.io.migrations`) creates
and evolves it, and a test keeps the migrations and this module equal.

- Offline feature store: `feature_sets`, `feature_rows`, `feature_metadata`, `feature_lineage`.
- Prediction ledger: `ledger_records` (predictions and events, chained per writer),
  `ledger_checkpoints` (signed chain heads), `feedback_labels` (delayed outcomes); append-only.
- Privacy: `customer_keys` (wrapped per-customer data keys: erasure deletes them),
  `privacy_state` (opt-out and erasure per pseudonym).
- Access control: `api_keys` (HMAC of the secret only; signing secret encrypted).
- `change_log`: the change feed every worker and replica follows (erasures, revocations,
  experiments, alias moves).
- Monitoring: `monitor_profiles` (reference profiles by fingerprint), `monitor_drift` (drift
  bin counts per worker, slot and flush interval), `monitor_usage` (measured CPU and memory
  per worker and interval), `monitor_reports` (what `monitor run` computed, for history).
- Lifecycle: `lifecycle_state` (the loop's small state: the bake under way, the data already
  trained on, the last cycle); every alias move itself is a ledger event.

Times in the ledger-side tables are integer microseconds since the epoch (UTC): exact in
both databases and in the hash chain.
"""

from __future__ import annotations

import sqlalchemy as sa

BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER only
Double: sa.Double[float] = sa.Double()

metadata = sa.MetaData()

feature_sets = sa.Table(
    "feature_sets",
    metadata,
    sa.Column("version", sa.String(80), primary_key=True),
    sa.Column("spec_name", sa.String(80), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),  # JSON list of feature names
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

feature_rows = sa.Table(
    "feature_rows",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("feature_set_version", sa.String(80), nullable=False),
    sa.Column("entity_id", sa.String(128), nullable=False),
    sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("values", sa.Text, nullable=False),
    sa.Index("ix_feature_rows_entity_time", "feature_set_version", "entity_id", "event_timestamp"),
)

feature_metadata = sa.Table(
    "feature_metadata",
    metadata,
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

feature_lineage = sa.Table(
    "feature_lineage",
    metadata,
    sa.Column("feature_set_version", sa.String(80), primary_key=True),
    sa.Column("feature", sa.String(128), primary_key=True),
    sa.Column("source_column", sa.String(128), primary_key=True),
    sa.Column("source_dataset", sa.String(256), nullable=False),
)

ledger_records = sa.Table(
    "ledger_records",
    metadata,
    sa.Column("record_id", sa.String(36), primary_key=True),  # prediction_id: UUIDv7
    sa.Column("writer_id", sa.String(32), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # prediction | event
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("subject", sa.String(32), nullable=True),  # customer pseudonym, never the id
    sa.Column("principal", sa.String(128), nullable=True),  # API key id or JWT subject
    sa.Column("model_name", sa.String(128), nullable=True),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("variant", sa.String(64), nullable=True),
    sa.Column("experiment", sa.String(128), nullable=True),
    sa.Column("bucket", sa.Integer, nullable=True),
    sa.Column("role", sa.String(8), nullable=True),  # served | shadow
    sa.Column("probability", Double, nullable=True),
    sa.Column("decision", sa.Boolean, nullable=True),
    sa.Column("threshold", Double, nullable=True),
    sa.Column("reasons", sa.Text, nullable=True),  # JSON [[feature, contribution], ...]
    sa.Column("feature_source", sa.String(32), nullable=True),
    sa.Column("feature_hash", sa.String(64), nullable=True),  # keyed hash of the vector
    sa.Column("key_epoch", sa.Integer, nullable=True),  # which of the customer's data keys
    sa.Column("payload", sa.LargeBinary, nullable=True),  # the vector, AES-GCM under that key
    sa.Column("action", sa.String(64), nullable=True),  # events: e.g. privacy.erase, models.promote
    sa.Column("details", sa.Text, nullable=True),  # events: JSON, no clear ids or PII
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("writer_id", "seq", name="uq_ledger_records_writer_seq"),
    sa.Index("ix_ledger_records_at", "at_us"),
    sa.Index("ix_ledger_records_subject", "subject", "at_us"),
    sa.Index("ix_ledger_records_action", "action", "at_us"),  # events by kind: model history
)

ledger_checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("writer_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("head", sa.String(64), nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
)

feedback_labels = sa.Table(
    "feedback_labels",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(32), nullable=False),
    sa.Column("churned", sa.Boolean, nullable=False),
    sa.Column("observed_at_us", sa.BigInteger, nullable=False),
    sa.Column("received_at_us", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # api | import
    sa.Column("principal", sa.String(128), nullable=True),
    sa.Index("ix_feedback_labels_subject", "subject"),
)

customer_keys = sa.Table(
    "customer_keys",
    metadata,
    sa.Column("subject", sa.String(32), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("writer_id", sa.String(32), primary_key=True),  # each writer wraps keys of its own
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
)

privacy_state = sa.Table(
    "privacy_state",
    metadata,
    sa.Column("subject", sa.String(32), primary_key=True),
    sa.Column("opted_out_at_us", sa.BigInteger, nullable=True),
    sa.Column("erased_at_us", sa.BigInteger, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(24), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # HMAC-SHA256(pepper, secret)
    sa.Column("scopes", sa.String(64), nullable=False),  # comma-separated
    sa.Column("rate_limit", sa.String(32), nullable=True),  # e.g. 100/minute; null: the default
    sa.Column("signed", sa.Boolean, nullable=False),
    sa.Column("signing_secret", sa.LargeBinary, nullable=True),  # AES-GCM under the master key
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("expires_at_us", sa.BigInteger, nullable=True),
    sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=True),
)

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON: pseudonyms and ids only, never clear PII
    sa.Column("at_us", sa.BigInteger, nullable=False),
)

monitor_profiles = sa.Table(
    "monitor_profiles",
    metadata,
    sa.Column("fingerprint", sa.String(16), primary_key=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("profile", sa.Text, nullable=False),  # ReferenceProfile.to_dict() as JSON
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
)

monitor_drift = sa.Table(
    "monitor_drift",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(16), nullable=True),  # null: the version has no reference profile
    sa.Column("worker_id", sa.String(64), nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("end_us", sa.BigInteger, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),  # predictions in the interval
    sa.Column("counts", sa.LargeBinary, nullable=True),  # little-endian int64 in the profile's layout
    sa.Index("ix_monitor_drift_end", "end_us"),
)

monitor_usage = sa.Table(
    "monitor_usage",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("worker_id", sa.String(64), nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("end_us", sa.BigInteger, nullable=False),
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("usage", sa.Text, nullable=False),  # WorkerUsage.to_dict() as JSON
    sa.Index("ix_monitor_usage_end", "end_us"),
)

monitor_reports = sa.Table(
    "monitor_reports",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # drift | performance | cost
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the report as JSON
    sa.Index("ix_monitor_reports_kind_at", "kind", "at_us"),
)


experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | stopped | promoted
    sa.Column("definition", sa.Text, nullable=False),  # JSON, current weights included
    sa.Column("bucket_table", sa.Text, nullable=False),  # JSON: which arm owns each of 10,000 buckets
    sa.Column("revision", sa.Integer, nullable=False),  # compare-and-set on every change
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("updated_at_us", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=True),
    sa.Column("winner", sa.String(64), nullable=True),
    sa.Column("looks", sa.Text, nullable=True),  # JSON: the sequential tests' state after the last look
)

experiment_history = sa.Table(
    "experiment_history",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # create | reweight | bandit | stop | promote
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("bucket_table", sa.Text, nullable=False),
    sa.Column("principal", sa.String(128), nullable=True),
    sa.Column("details", sa.Text, nullable=True),
    sa.Index("ix_experiment_history_name", "name", "revision"),
)

lifecycle_state = sa.Table(
    "lifecycle_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # bake | watermark | last_cycle | ...
    sa.Column("value", sa.Text, nullable=False),  # JSON: versions, times, file names; never PII
    sa.Column("updated_at_us", sa.BigInteger, nullable=False),
)

# Tables the service may only append to (PostgreSQL and SQLite triggers refuse UPDATE/DELETE).
APPEND_ONLY = ("ledger_records", "ledger_checkpoints", "feedback_labels")

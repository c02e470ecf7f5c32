"""Ingest: read raw data, keep only the spec's columns, write a content-hashed snapshot."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnops.core.schema import conform_to_spec, content_hash
from churnops.core.spec import DatasetSpec
from churnops.io.datasets import read_table
from churnops.jobs.workdir import Workdir, write_json

logger = logging.getLogger(__name__)


def ingest(data: Path, spec: DatasetSpec, workdir: Workdir) -> dict[str, Any]:
    """Write `snapshot.parquet` (spec columns only) and `snapshot.json` (hash, rows, spec, time)."""
    raw = read_table(data)
    frame = conform_to_spec(raw, spec)
    dropped = [c for c in raw.columns if c not in frame.columns]
    workdir.root.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(workdir.snapshot, index=False)
    meta = {
        "source": str(data),
        "rows": len(frame),
        "content_hash": content_hash(frame),
        "spec": spec.model_dump(mode="json"),
        "feature_set_version": spec.feature_set_version(),
        "ingested_at": datetime.now(UTC).isoformat(),
        "dropped_columns": len(dropped),
    }
    write_json(workdir.snapshot_meta, meta)
    logger.info("ingested %d rows from %s (%d unnamed columns dropped)", len(frame), data, len(dropped))
    return meta

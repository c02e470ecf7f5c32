"""Ingest: read raw data, keep only the spec's columns, write a content-hashed snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.core.schema import conform_to_spec, content_hash
from churnops.core.spec import DatasetSpec
from churnops.io.datasets import read_table
from churnops.jobs.workdir import Workdir, write_json

logger = logging.getLogger(__name__)


# Given the spec's id column, True for the rows to keep (opted-out and erased customers are not).
PrivacyFilter = Callable[[pd.Series], "np.ndarray[Any, np.dtype[np.bool_]]"]


def ingest(
    data: Path, spec: DatasetSpec, workdir: Workdir, keep: PrivacyFilter | None = None
) -> dict[str, Any]:
    """Write `snapshot.parquet` (spec columns only) and `snapshot.json` (hash, rows, spec, time)."""
    raw = read_table(data)
    frame = conform_to_spec(raw, spec)
    dropped = [c for c in raw.columns if c not in frame.columns]
    excluded = 0
    if keep is not None:
        mask = keep(frame[spec.id_column])
        excluded = int((~mask).sum())
        frame = frame[mask].reset_index(drop=True)
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
        "excluded_customers": excluded,
    }
    write_json(workdir.snapshot_meta, meta)
    logger.info(
        "ingested %d rows from %s (%d unnamed columns dropped, %d opted-out or erased customers left out)",
        len(frame),
        data,
        len(dropped),
        excluded,
    )
    return meta

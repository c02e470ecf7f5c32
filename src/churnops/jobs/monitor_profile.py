"""Backfill: give a model version trained before reference profiles existed the profile it lacks.

The profile must describe the version's TRAINING rows, never data a later candidate holds out.
Without `--data` the pipeline's working directory is used when it holds the very dataset the
version was trained on (same content hash as the version's lineage tag), and its training part
(fit + validation rows) is profiled exactly as `pipeline run` would have. With `--data` the
file's rows are profiled as given: pass the data the version was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.core.params import Params
from churnops.core.split import HOLDOUT
from churnops.errors import DataError
from churnops.io.datasets import read_table
from churnops.jobs.evaluate import reference_profile
from churnops.jobs.featurize import load_split
from churnops.jobs.pipeline import default_workdir
from churnops.jobs.registry_access import registry_for
from churnops.settings import Settings

logger = logging.getLogger(__name__)


def backfill_profile(
    settings: Settings, params: Params, version: str, data: Path | None = None, model: str | None = None
) -> dict[str, Any]:
    """Build and store the reference profile of `version`: {model_name, version, fingerprint, rows}."""
    registry = registry_for(settings)
    name = registry.resolve_name(model or settings.model_name)
    tags = registry.version_tags(name, version)
    bundle = registry.load_bundle(name, version)
    rows = _training_rows(settings, tags, version) if data is None else read_table(data)
    profile = reference_profile(bundle, rows, params)
    fingerprint = registry.save_reference_profile(name, version, profile.to_dict())
    logger.info("reference profile %s of %s v%s from %d rows", fingerprint, name, version, len(rows))
    return {"model_name": name, "version": version, "fingerprint": fingerprint, "rows": len(rows)}


def _training_rows(settings: Settings, tags: dict[str, str], version: str) -> pd.DataFrame:
    workdir = default_workdir(settings)
    trained_on = tags.get("dataset.content_hash")
    held = workdir.read_meta().get("content_hash")
    if trained_on is None or held != trained_on:
        raise DataError(
            f"the pipeline working directory holds dataset {held}, version {version} was trained on "
            f"{trained_on}: pass --data FILE with the rows version {version} was trained on"
        )
    frame = workdir.read_training_frame()
    split = load_split(workdir).to_numpy()
    training: pd.DataFrame = frame[split != HOLDOUT].reset_index(drop=True)
    return training

"""Batch scoring: a CSV or Parquet file of customers in, the prediction fields out, vectorised."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.core.bundle import ModelBundle
from churnops.core.fast_model import FastModel
from churnops.core.schema import conform_to_spec
from churnops.io.datasets import read_table, write_table

logger = logging.getLogger(__name__)

CHUNK_ROWS = 250_000
Progress = Callable[[int, int], None]  # (rows done, rows total)


def score_frame(
    bundle: ModelBundle,
    frame: pd.DataFrame,
    fast: FastModel,
    model: dict[str, str],
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Prediction fields for every row: probability, decision, threshold, model, top-3 reasons."""
    spec = bundle.spec
    features = conform_to_spec(frame, spec, with_target=False)
    total = len(features)
    probabilities = np.empty(total, dtype=np.float64)
    names = np.empty((total, 3), dtype=object)
    values = np.empty((total, 3), dtype=np.float64)
    for start in range(0, total, CHUNK_ROWS):
        chunk = features.iloc[start : start + CHUNK_ROWS]
        proba, contributions = fast.score_batch(bundle.transformer.transform(chunk))
        top_names, top_values = fast.top_reasons_batch(contributions, 3)
        stop = start + len(chunk)
        probabilities[start:stop], names[start:stop], values[start:stop] = proba, top_names, top_values
        if progress:
            progress(stop, total)
    out: dict[str, Any] = {
        spec.id_column: features[spec.id_column].to_numpy(),
        "churn_probability": probabilities,
        "churn": probabilities >= bundle.threshold,
        "threshold": bundle.threshold,
        "model_name": model["name"],
        "model_version": model["version"],
        "model_variant": model["variant"],
        "feature_source": "file",
    }
    for rank in range(names.shape[1]):
        out[f"reason_{rank + 1}"] = names[:, rank]
        out[f"reason_{rank + 1}_contribution"] = values[:, rank]
    return pd.DataFrame(out)


def score_file(
    bundle: ModelBundle, data: Path, out: Path, model: dict[str, str], progress: Progress | None = None
) -> int:
    """Read `data`, score it, write `out` (CSV or Parquet by extension); returns the row count."""
    fast = FastModel.build(bundle.classifier, bundle.transformer.output_sources, bundle.spec.feature_columns)
    fast.warm_up()
    scored = score_frame(bundle, read_table(data), fast, model, progress)
    write_table(scored, out)
    logger.info("scored %d rows with %s v%s to %s", len(scored), model["name"], model["version"], out)
    return len(scored)

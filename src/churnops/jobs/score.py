"""Batch scoring: a CSV or Parquet file of customers in, the prediction fields out, vectorised."""

from __future__ import annotations

import logging
import time
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

# Row blocks whose feature matrix stays cache-sized: transforming 1M rows at once is ~3.5x slower
# (column writes into one 376 MB matrix miss the cache on every row).
CHUNK_ROWS = 32_768
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
    codes = np.empty((total, 3), dtype=np.int64)
    values = np.empty((total, 3), dtype=np.float64)
    for start in range(0, total, CHUNK_ROWS):
        chunk = features.iloc[start : start + CHUNK_ROWS]
        proba, contributions = fast.score_batch(bundle.transformer.transform(chunk))
        top_codes, top_values = fast.top_reason_codes(contributions, 3)
        stop = start + len(chunk)
        probabilities[start:stop], codes[start:stop], values[start:stop] = proba, top_codes, top_values
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
    for rank in range(codes.shape[1]):
        # Categorical: a handful of feature names repeated a million times (cheap to build and write).
        names = list(fast.raw_features)
        out[f"reason_{rank + 1}"] = pd.Categorical.from_codes(codes[:, rank], categories=pd.Index(names))
        out[f"reason_{rank + 1}_contribution"] = values[:, rank]
    return pd.DataFrame(out)


def score_file(
    bundle: ModelBundle, data: Path, out: Path, model: dict[str, str], progress: Progress | None = None
) -> dict[str, float]:
    """Read `data`, score it, write `out` (CSV or Parquet by extension); returns rows and phase seconds."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fast = FastModel.build(bundle.classifier, bundle.transformer.output_sources, bundle.spec.feature_columns)
    fast.warm_up()
    timings["compile_s"] = time.perf_counter() - started
    frame = read_table(data)
    timings["read_s"] = time.perf_counter() - started - timings["compile_s"]
    scored = score_frame(bundle, frame, fast, model, progress)
    timings["score_s"] = time.perf_counter() - started - timings["compile_s"] - timings["read_s"]
    write_table(scored, out)
    timings["total_s"] = time.perf_counter() - started
    timings["write_s"] = timings["total_s"] - timings["compile_s"] - timings["read_s"] - timings["score_s"]
    logger.info(
        "scored %d rows with %s v%s to %s in %.1f s (read %.1f, transform+score %.1f, write %.1f)",
        len(scored),
        model["name"],
        model["version"],
        out,
        timings["total_s"],
        timings["read_s"],
        timings["score_s"],
        timings["write_s"],
    )
    return {"rows": float(len(scored)), **timings}

"""Featurize: fixed split, fit the FeatureTransformer on the fit part, fill the offline store."""

from __future__ import annotations

import logging
import pickle
from datetime import datetime

import pandas as pd

from churnops.core.features import FeatureTransformer
from churnops.core.params import Params
from churnops.core.schema import target_labels
from churnops.core.split import FIT, assign_splits
from churnops.io.offline_store import SqlOfflineStore
from churnops.jobs.workdir import Workdir

logger = logging.getLogger(__name__)


def featurize(workdir: Workdir, params: Params, store: SqlOfflineStore) -> FeatureTransformer:
    """Write `split.parquet` and `transformer.pkl`; append every customer's features to the store."""
    spec = workdir.read_spec()
    meta = workdir.read_meta()
    frame = workdir.read_snapshot()
    splits = assign_splits(target_labels(frame, spec), params.split)
    pd.DataFrame({spec.id_column: frame[spec.id_column], "split": splits}).to_parquet(
        workdir.split, index=False
    )
    transformer = FeatureTransformer(spec, params.features).fit(frame[splits == FIT])
    with workdir.transformer.open("wb") as handle:
        pickle.dump(transformer, handle, protocol=pickle.HIGHEST_PROTOCOL)
    # Rows carry their own event time when the spec names one, else the snapshot's.
    stamp_column = [spec.timestamp_column] if spec.timestamp_column else []
    written = store.write_features(
        version=meta["feature_set_version"],
        spec_name=spec.name,
        frame=frame[[spec.id_column, *stamp_column, *spec.feature_columns]],
        id_column=spec.id_column,
        event_timestamp=spec.timestamp_column or datetime.fromisoformat(meta["ingested_at"]),
    )
    store.write_metadata(meta["feature_set_version"], spec, source_dataset=meta["content_hash"])
    logger.info(
        "featurized: %d outputs (%s engineered), %d rows to the offline store",
        transformer.n_outputs,
        ", ".join(transformer.active_engineered) or "no",
        written,
    )
    return transformer


def load_transformer(workdir: Workdir) -> FeatureTransformer:
    with workdir.require(workdir.transformer, "featurize").open("rb") as handle:
        transformer: FeatureTransformer = pickle.load(handle)
    return transformer


def load_split(workdir: Workdir) -> pd.Series:
    return pd.read_parquet(workdir.require(workdir.split, "featurize"))["split"]

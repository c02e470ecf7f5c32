"""Featurize: fill the offline store, read the training set back from it point in time, split, fit.

Training reads its features from the offline store through the same rows and
definitions that `features materialize` copies to the online store, so training
and serving see the same vectors (no training/serving skew by construction).
"""

from __future__ import annotations

import logging
import pickle
from datetime import datetime

import pandas as pd

from churnops.core.features import FeatureTransformer
from churnops.core.params import Params
from churnops.core.schema import target_labels
from churnops.core.spec import DatasetSpec
from churnops.core.split import FIT, assign_splits
from churnops.errors import DataError
from churnops.io.offline_store import SqlOfflineStore
from churnops.jobs.workdir import Workdir

logger = logging.getLogger(__name__)


def featurize(workdir: Workdir, params: Params, store: SqlOfflineStore) -> FeatureTransformer:
    """Write the offline store, `training.parquet`, `split.parquet` and `transformer.pkl`."""
    spec, meta, snapshot = workdir.read_spec(), workdir.read_meta(), workdir.read_snapshot()
    version = meta["feature_set_version"]
    snapshot_time = datetime.fromisoformat(meta["ingested_at"])
    # Rows carry their own event time when the spec names one, else the snapshot's.
    stamp_column = [spec.timestamp_column] if spec.timestamp_column else []
    written = store.write_features(
        version=version,
        spec_name=spec.name,
        frame=snapshot[[spec.id_column, *stamp_column, *spec.feature_columns]],
        id_column=spec.id_column,
        event_timestamp=spec.timestamp_column or snapshot_time,
    )
    store.write_metadata(version, spec, source_dataset=meta["content_hash"])
    frame = training_frame(store, spec, version, snapshot, snapshot_time)
    frame.to_parquet(workdir.training_frame, index=False)
    splits = assign_splits(target_labels(frame, spec), params.split)
    pd.DataFrame({spec.id_column: frame[spec.id_column], "split": splits}).to_parquet(
        workdir.split, index=False
    )
    transformer = FeatureTransformer(spec, params.features).fit(frame[splits == FIT])
    with workdir.transformer.open("wb") as handle:
        pickle.dump(transformer, handle, protocol=pickle.HIGHEST_PROTOCOL)
    logger.info(
        "featurized: %d rows to the offline store, read back point in time; %d outputs (%s engineered)",
        written,
        transformer.n_outputs,
        ", ".join(transformer.active_engineered) or "no",
    )
    return transformer


def training_frame(
    store: SqlOfflineStore, spec: DatasetSpec, version: str, snapshot: pd.DataFrame, snapshot_time: datetime
) -> pd.DataFrame:
    """Each labelled row's features as of its label time (its own event time, else the snapshot's),
    read from the offline store; ids and labels come from the snapshot, in its row order."""
    ids = snapshot[spec.id_column].astype(str).reset_index(drop=True)
    times = snapshot[spec.timestamp_column].reset_index(drop=True) if spec.timestamp_column else snapshot_time
    labels = pd.DataFrame({"entity_id": ids, "label_timestamp": times})
    features = store.training_set(version, labels)
    missing = features["feature_timestamp"].isna()
    if missing.any():
        raise DataError(
            f"{int(missing.sum())} rows have no features at their label time in feature set {version}"
        )
    frame = features[spec.feature_columns].copy()
    frame.insert(0, spec.id_column, ids)
    frame[spec.target.column] = snapshot[spec.target.column].to_numpy()
    return frame


def load_transformer(workdir: Workdir) -> FeatureTransformer:
    with workdir.require(workdir.transformer, "featurize").open("rb") as handle:
        # bandit B301: this pipeline's own output
        transformer: FeatureTransformer = pickle.load(handle)  # nosec B301
    return transformer


def load_split(workdir: Workdir) -> pd.Series:
    return pd.read_parquet(workdir.require(workdir.split, "featurize"))["split"]

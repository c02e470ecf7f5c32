"""The pipeline's working directory: files that stages hand to each other (and DVC tracks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.core.spec import DatasetSpec
from churnops.errors import DataError


@dataclass(frozen=True)
class Workdir:
    """Named paths under one directory (default `$CHURNOPS_HOME/pipeline`)."""

    root: Path

    @property
    def snapshot(self) -> Path:
        return self.root / "snapshot.parquet"

    @property
    def snapshot_meta(self) -> Path:
        return self.root / "snapshot.json"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def training_frame(self) -> Path:
        return self.root / "training.parquet"

    @property
    def split(self) -> Path:
        return self.root / "split.parquet"

    @property
    def transformer(self) -> Path:
        return self.root / "transformer.pkl"

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    @property
    def training(self) -> Path:
        return self.root / "training.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation_dir / "metrics.json"

    @property
    def model_card(self) -> Path:
        return self.evaluation_dir / "model_card.md"

    @property
    def model_card_data(self) -> Path:
        return self.evaluation_dir / "model_card.pkl"

    @property
    def reference_profile(self) -> Path:
        return self.evaluation_dir / "reference_profile.json"

    @property
    def bundle(self) -> Path:
        return self.evaluation_dir / "bundle.pkl"

    @property
    def registration(self) -> Path:
        return self.root / "registration.json"

    def require(self, path: Path, stage: str) -> Path:
        """Fail with the stage to run first when an upstream output is missing."""
        if not path.exists():
            raise DataError(f"{path} is missing: run `churnops pipeline {stage}` first")
        return path

    def read_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = read_json(self.require(self.snapshot_meta, "ingest"))
        return meta

    def read_spec(self) -> DatasetSpec:
        return DatasetSpec.model_validate(self.read_meta()["spec"])

    def read_training_frame(self) -> pd.DataFrame:
        """Id, features read back from the offline store (point in time) and the label."""
        return pd.read_parquet(self.require(self.training_frame, "featurize"))

    def read_snapshot(self) -> pd.DataFrame:
        return pd.read_parquet(self.require(self.snapshot, "ingest"))


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

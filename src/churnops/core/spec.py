"""Dataset spec: which columns are the id, the target, features, PII and slices."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churnops.errors import ConfigError

Scalar = str | int | float | bool


class TargetSpec(BaseModel):
    """The target column and the value that means 'churned'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    positive: Scalar


class FeatureColumns(BaseModel):
    """Feature columns by kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    numerical: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


class DatasetSpec(BaseModel):
    """A dataset spec as in DESIGN.md; any columns it does not name are dropped at ingestion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    id_column: str
    target: TargetSpec
    timestamp_column: str | None = None
    features: FeatureColumns
    pii: tuple[str, ...] = ()
    slices: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetSpec:
        features = self.feature_columns
        if not features:
            raise ValueError("features: at least one numerical or categorical column is required")
        duplicated = sorted({c for c in features if features.count(c) > 1})
        if duplicated:
            raise ValueError(f"features: column(s) listed twice: {duplicated}")
        for role, column in (("id_column", self.id_column), ("target.column", self.target.column)):
            if column in features:
                raise ValueError(f"{role}: '{column}' is also listed as a feature")
        for field, columns in (("pii", self.pii), ("slices", self.slices)):
            unknown = [c for c in columns if c not in features]
            if unknown:
                raise ValueError(f"{field}: {unknown} not among the spec's features")
        return self

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numerical, *self.features.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column the spec keeps, in a stable order."""
        extra = [self.timestamp_column] if self.timestamp_column else []
        return [self.id_column, *extra, *self.feature_columns, self.target.column]

    def feature_set_version(self) -> str:
        """A short content hash of the feature definitions: it changes when the features do."""
        payload = json.dumps(
            {"numerical": self.features.numerical, "categorical": self.features.categorical},
            sort_keys=True,
        )
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    def is_positive(self, value: Any) -> bool:
        """True when a raw target value means 'churned' ('Yes', 1, 1.0 and True all match 1)."""
        positive = self.target.positive
        if isinstance(positive, str) or isinstance(value, str):
            return str(value).strip() == str(positive).strip()
        try:
            return float(value) == float(positive)
        except (TypeError, ValueError):
            return False


def parse_spec(text: str, source: str = "spec") -> DatasetSpec:
    """Parse spec YAML text; errors name the field at fault."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err.__class__.__name__})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of spec fields, got {type(raw).__name__}")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from err

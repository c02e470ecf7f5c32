"""Pipeline parameters (params.yaml): split, validation, features, candidates, evaluation, business,
the online store's expiry, the ledger, and monitoring."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churnops.core.monitoring_params import MonitoringParams
from churnops.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SplitParams(BaseModel):
    """Fixed, stratified splits: the holdout is never used for fitting or selection."""

    model_config = _FROZEN
    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    validation_fraction: float = Field(0.15, gt=0, lt=0.9)  # of the training part
    seed: int = 42


class ValidationParams(BaseModel):
    """Thresholds for the expectation suite."""

    model_config = _FROZEN
    max_null_fraction: float = Field(0.05, ge=0, le=1)
    min_rows: int = Field(50, ge=1)
    max_rows: int | None = None
    numeric_range_margin: float = Field(0.5, ge=0)  # widen reference [min, max] by this share of the range
    max_unseen_category_fraction: float = Field(0.1, ge=0, le=1)


class CountFeature(BaseModel):
    """Count of `columns` equal to `value`, e.g. the number of subscribed services."""

    model_config = _FROZEN
    columns: tuple[str, ...]
    value: str


_TELCO_SERVICES = (
    "PhoneService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)


def _default_buckets() -> dict[str, tuple[float, ...]]:
    edges: tuple[float, ...] = (6.0, 12.0, 24.0, 48.0)
    return {"tenure": edges, "tenure_months": edges}


class FeatureParams(BaseModel):
    """Engineered features; each applies only when the spec has all the columns it names.

    The defaults mirror the repository's params.yaml (a test keeps them equal), so
    running outside a checkout engineers the same features.
    """

    model_config = _FROZEN
    buckets: dict[str, tuple[float, ...]] = Field(default_factory=_default_buckets)  # column -> edges
    ratios: dict[str, tuple[str, str]] = Field(  # name -> (numerator, denominator)
        default_factory=lambda: {
            "charges_per_month_of_tenure": ("TotalCharges", "tenure"),
            "total_charges_per_month": ("total_charges", "tenure_months"),
            "charges_per_service": ("monthly_charges", "num_services"),
        }
    )
    counts: dict[str, CountFeature] = Field(
        default_factory=lambda: {"n_services": CountFeature(columns=_TELCO_SERVICES, value="Yes")}
    )
    crosses: tuple[tuple[str, str], ...] = (("Contract", "InternetService"), ("contract", "internet_service"))
    max_categories: int = Field(50, ge=2)  # rarer categories share the 'unknown' encoding
    # A PII column's category gets its own encoding only when this many training rows share it:
    # the fitted model (pickled, logged to MLflow) never holds a value that singles a customer out.
    min_pii_category_count: int = Field(10, ge=1)


class CandidateParams(BaseModel):
    """One candidate model to train."""

    model_config = _FROZEN
    name: str
    kind: Literal["logistic_regression", "lightgbm", "xgboost"]
    params: dict[str, Any] = Field(default_factory=dict)
    early_stopping_rounds: int | None = Field(None, ge=1)


def _default_candidates() -> tuple[CandidateParams, ...]:
    return (
        CandidateParams(name="logreg", kind="logistic_regression", params={"C": 1.0, "max_iter": 2000}),
        CandidateParams(
            name="lightgbm",
            kind="lightgbm",
            params={"n_estimators": 2000, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 40},
            early_stopping_rounds=50,
        ),
        CandidateParams(
            name="xgboost",
            kind="xgboost",
            params={"n_estimators": 2000, "learning_rate": 0.05, "max_depth": 5},
            early_stopping_rounds=50,
        ),
    )


class TrainingParams(BaseModel):
    """Candidates and the wall-clock budget for training all of them."""

    model_config = _FROZEN
    candidates: tuple[CandidateParams, ...] = Field(default_factory=_default_candidates, min_length=1)
    budget_seconds: float = Field(600.0, gt=0)
    selection_metric: Literal["roc_auc", "pr_auc", "log_loss"] = "roc_auc"

    @model_validator(mode="after")
    def _unique_names(self) -> TrainingParams:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidates: names must be unique, got {names}")
        return self


class EvaluationParams(BaseModel):
    """Holdout evaluation and cross-validation of the chosen candidate."""

    model_config = _FROZEN
    cv_folds: int = Field(5, ge=0)  # 0 or 1 disables cross-validation
    cv_max_rows: int = Field(200_000, ge=100)
    calibration_bins: int = Field(10, ge=2)


class BusinessParams(BaseModel):
    """Retention economics that pick the decision threshold."""

    model_config = _FROZEN
    contact_cost: float = Field(5.0, ge=0)
    saved_customer_value: float = Field(200.0, ge=0)
    offer_success_rate: float = Field(0.3, ge=0, le=1)


class OnlineStoreParams(BaseModel):
    """How long materialized vectors live in the online store (Redis; the in-process store ignores it).

    An expiry bounds how stale a vector can be served if materialization stops
    running: past it the customer has no stored features (404 unless the request
    carries them). `null` keeps vectors until the next materialization overwrites them.
    """

    model_config = _FROZEN
    ttl_seconds: int | None = Field(604_800, ge=1)  # 7 days


class LedgerParams(BaseModel):
    """The prediction ledger: data-key periods, payload retention, how labels join predictions."""

    model_config = _FROZEN
    key_epoch_days: int = Field(
        7, ge=1
    )  # one data key per customer and period: retention shreds whole periods
    retention_days: int = Field(400, ge=1)  # `privacy purge` default: payloads older than this are shredded
    label_window_days: int = Field(60, ge=1)  # a label by customer joins predictions this long before it


class Params(BaseModel):
    """Everything params.yaml controls."""

    model_config = _FROZEN
    split: SplitParams = Field(default_factory=SplitParams)
    validation: ValidationParams = Field(default_factory=ValidationParams)
    features: FeatureParams = Field(default_factory=FeatureParams)
    training: TrainingParams = Field(default_factory=TrainingParams)
    evaluation: EvaluationParams = Field(default_factory=EvaluationParams)
    business: BusinessParams = Field(default_factory=BusinessParams)
    online_store: OnlineStoreParams = Field(default_factory=OnlineStoreParams)
    ledger: LedgerParams = Field(default_factory=LedgerParams)
    monitoring: MonitoringParams = Field(default_factory=MonitoringParams)


def parse_params(text: str, source: str = "params.yaml") -> Params:
    """Parse params YAML; unknown keys and bad values are errors that name the field."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err.__class__.__name__})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}") from err

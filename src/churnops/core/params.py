"""Pipeline parameters (params.yaml): split, validation, features, candidates and their search,
evaluation, business, the online store's expiry, the ledger, monitoring, the promotion gates and the
lifecycle loop."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from churnops.core.gate_policy import GatesPolicy, parse_gates
from churnops.core.lifecycle_params import LifecycleParams
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


Kind = Literal["logistic_regression", "lightgbm", "xgboost"]
KINDS: tuple[Kind, ...] = ("logistic_regression", "lightgbm", "xgboost")


class CandidateParams(BaseModel):
    """One candidate model to train."""

    model_config = _FROZEN
    name: str
    kind: Kind
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


# The parameters a search space may name, per family (canonical names only: an alias beside its
# canonical name in the fixed params would make the library pick one of them silently).
SEARCHABLE: dict[str, frozenset[str]] = {
    "logistic_regression": frozenset({"C", "class_weight", "l1_ratio", "solver", "tol", "max_iter"}),
    "lightgbm": frozenset(
        {
            "learning_rate", "num_leaves", "max_depth", "min_child_samples", "min_child_weight",
            "min_split_gain", "feature_fraction", "feature_fraction_bynode", "bagging_fraction",
            "bagging_freq", "lambda_l1", "lambda_l2", "max_bin", "path_smooth", "extra_trees",
            "n_estimators",
        }
    ),
    "xgboost": frozenset(
        {
            "learning_rate", "max_depth", "max_leaves", "min_child_weight", "subsample",
            "colsample_bytree", "colsample_bylevel", "colsample_bynode", "reg_lambda", "reg_alpha",
            "gamma", "max_delta_step", "max_bin", "grow_policy", "n_estimators",
        }
    ),
}  # fmt: skip


class SearchRange(BaseModel):
    """One searched parameter: a numeric range `low`..`high` (`log` scale, optional `step`) or a
    list of `choices`. A range is an integer range when `low` and `high` are both integers."""

    model_config = _FROZEN
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _valid(self) -> SearchRange:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise PydanticCustomError("search_range", "give either choices or low/high, not both")
            if not self.choices:
                raise PydanticCustomError("search_range", "empty range: choices is an empty list")
            return self
        if self.low is None or self.high is None:
            raise PydanticCustomError("search_range", "needs low and high (or choices)")
        if self.low > self.high:
            raise PydanticCustomError(
                "search_range", "empty range: low {low} > high {high}", {"low": self.low, "high": self.high}
            )
        if self.log and self.low <= 0:
            raise PydanticCustomError("search_range", "log scale needs low > 0, got {low}", {"low": self.low})
        if self.log and self.step is not None:
            raise PydanticCustomError("search_range", "log scale and step cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    def contains(self, value: Any) -> bool:
        """Whether a fixed value (a default, the previous champion's) lies in this range."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None  # checked by _valid
        assert self.high is not None
        return self.low <= value <= self.high and (not self.is_int or float(value).is_integer())


SearchSpace = dict[str, SearchRange]


def _default_spaces() -> dict[Kind, SearchSpace]:
    def r(low: float, high: float, log: bool = False) -> SearchRange:
        return SearchRange(low=low, high=high, log=log)

    return {
        "logistic_regression": {"C": r(0.001, 100.0, log=True)},
        "lightgbm": {
            "learning_rate": r(0.02, 0.2, log=True),
            "num_leaves": r(7, 127, log=True),
            "min_child_samples": r(5, 200, log=True),
            "feature_fraction": r(0.4, 1.0),
            "bagging_fraction": r(0.5, 1.0),
            "bagging_freq": SearchRange(choices=(1,)),
            "lambda_l2": r(0.001, 30.0, log=True),
        },
        "xgboost": {
            "learning_rate": r(0.02, 0.2, log=True),
            "max_depth": r(2, 10),
            "min_child_weight": r(0.5, 50.0, log=True),
            "subsample": r(0.5, 1.0),
            "colsample_bytree": r(0.4, 1.0),
            "reg_lambda": r(0.001, 30.0, log=True),
        },
    }


def _default_shares() -> dict[Kind, float]:
    return {"logistic_regression": 1.0, "lightgbm": 2.0, "xgboost": 2.0}


class SearchParams(BaseModel):
    """Hyperparameter search: per family, TPE trials scored by k-fold on the fit rows only.

    The budget is split across the searched families by `shares` (time a family leaves unused
    goes to the next). A family stops early after `patience` trials without improvement.
    """

    model_config = _FROZEN
    enabled: bool = True
    budget_seconds: float = Field(120.0, gt=0)
    folds: int = Field(3, ge=2, le=10)
    max_rows: int = Field(50_000, ge=100)  # fit rows the folds draw from (stratified sample)
    max_trials: int | None = Field(None, ge=1)  # per family
    patience: int | None = Field(30, ge=1)  # trials without improvement before a family stops
    pruner: Literal["median", "successive_halving", "none"] = "median"
    warm_start: bool = True  # also try the previous champion's parameters first
    seed: int = 42
    shares: dict[Kind, float] = Field(default_factory=_default_shares)
    spaces: dict[Kind, SearchSpace] = Field(default_factory=_default_spaces)

    @field_validator("spaces")
    @classmethod
    def _known_parameters(cls, spaces: dict[Kind, SearchSpace]) -> dict[Kind, SearchSpace]:
        for kind, space in spaces.items():
            unknown = sorted(set(space) - SEARCHABLE[kind])
            if unknown:
                raise PydanticCustomError(
                    "search_space",
                    "{entry}: unknown parameter for {kind} (searchable: {known})",
                    {
                        "entry": f"{kind}.{unknown[0]}",
                        "kind": kind,
                        "known": ", ".join(sorted(SEARCHABLE[kind])),
                    },
                )
        return spaces

    @field_validator("shares")
    @classmethod
    def _positive_shares(cls, shares: dict[Kind, float]) -> dict[Kind, float]:
        for kind, share in shares.items():
            if not share > 0:
                raise PydanticCustomError(
                    "search_share",
                    "{entry}: a share must be > 0, got {share}",
                    {"entry": kind, "share": share},
                )
        return shares


class TrainingParams(BaseModel):
    """Candidates, the wall-clock budget for training all of them, and the hyperparameter search."""

    model_config = _FROZEN
    candidates: tuple[CandidateParams, ...] = Field(default_factory=_default_candidates, min_length=1)
    budget_seconds: float = Field(600.0, gt=0)
    selection_metric: Literal["roc_auc", "pr_auc", "log_loss"] = "roc_auc"
    search: SearchParams = Field(default_factory=SearchParams)
    # Also try a log-odds blend of the best linear and the best tree candidate (kept only when it
    # beats the best single candidate on validation).
    blend: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> TrainingParams:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidates: names must be unique, got {names}")
        if self.blend and BLEND in names:
            raise ValueError(f"candidates: the name {BLEND!r} is the blend's (or set blend: false)")
        return self


BLEND = "blend"  # the blend's candidate name


def with_search(params: Params, enabled: bool) -> Params:
    """`params` with the hyperparameter search switched on or off (the CLI's `--search`)."""
    search = params.training.search.model_copy(update={"enabled": enabled})
    training = params.training.model_copy(update={"search": search})
    return params.model_copy(update={"training": training})


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
    gates: GatesPolicy = Field(default_factory=GatesPolicy)
    lifecycle: LifecycleParams = Field(default_factory=LifecycleParams)

    @field_validator("gates", mode="before")
    @classmethod
    def _gates(cls, value: Any) -> Any:
        # The YAML shorthands (`calibration: false`, `approval: true`) and errors that name the gate.
        return value if isinstance(value, GatesPolicy) else parse_gates(value)


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
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{source}: {where}: {message}") from err

"""params.yaml `monitoring:`: the reference profile's bins, drift thresholds, performance and cost.

    monitoring:
      profile: {numeric_bins: 10, max_categories: 50, max_other_keys: 1000, prediction_bins: 10}
      drift: {psi_warn: 0.1, psi_alert: 0.25, unseen_warn: 0.01, unseen_alert: 0.05,
              drifted_share_alert: 0.5, min_window: 1000, smoothing: 0.5}
      performance: {label_window_days: 30, cohort: day, min_labels: 200, ...}
      cost:
        prices: {vcpu_hour_usd: 0.0425, gb_hour_usd: 0.0047, replica_hour_usd: 0.01}
        anomaly_factor: 1.5
        min_baseline: 3
      gate: {min_roc_auc: 0.70}
      retention_days: 90

Every section has defaults except the price table: cost figures need one (no default
price is a fact about anybody's bill). The models live here, free of the domain modules
that use them (drift, performance, cost), so `core.params` can mount them without a cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class DriftParams(BaseModel):
    """Thresholds of the drift judgement (params.yaml `monitoring.drift`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    # share of a window's values in categories training never had
    unseen_warn: float = Field(0.01, gt=0, le=1)
    unseen_alert: float = Field(0.05, gt=0, le=1)
    drifted_share_alert: float = Field(0.5, gt=0, le=1)  # share of features at warn or worse that alerts
    min_window: int = Field(1000, ge=1)  # fewer predictions than this: not judged
    smoothing: float = Field(0.5, gt=0)  # pseudo-count per bin in PSI

    @model_validator(mode="after")
    def _ordered(self) -> DriftParams:
        if self.psi_alert < self.psi_warn or self.unseen_alert < self.unseen_warn:
            raise ValueError("alert thresholds must not be below their warn thresholds")
        return self


class PerformanceParams(BaseModel):
    """Cohorts, label window and calibration tolerances (params.yaml `monitoring.performance`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    label_window_days: float = Field(30.0, gt=0)  # a churn label is final this long after the prediction
    cohort: Literal["day", "week"] = "day"
    min_labels: int = Field(200, ge=1)  # fewer labels in a cohort: no realised metrics
    confidence: float = Field(0.95, gt=0, lt=1)
    calibration_bins: int = Field(10, ge=2)
    # The calibration check pools the latest matured cohorts until it has `calibration_min_labels`
    # labels, taking at most `calibration_cohorts` of them: one cohort on busy traffic, so a change
    # shows the day its first cohort matures; several on quiet traffic.
    calibration_cohorts: int = Field(7, ge=1)
    calibration_min_labels: int = Field(2000, ge=1)
    mean_gap_tolerance: float = Field(0.02, ge=0)  # |observed churn rate - mean probability|
    ece_tolerance: float = Field(0.05, ge=0)
    auc_gap_tolerance: float = Field(0.02, ge=0)  # |estimated AUC - realised AUC|


class PriceTable(BaseModel):
    """What an hour of compute costs (params.yaml `monitoring.cost.prices`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    vcpu_hour_usd: float = Field(ge=0)
    gb_hour_usd: float = Field(ge=0)
    replica_hour_usd: float = Field(0.0, ge=0)  # fixed: load balancer share, node overhead, ...


class CostParams(BaseModel):
    """Prices and the anomaly rule (params.yaml `monitoring.cost`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prices: PriceTable | None = None
    anomaly_factor: float = Field(1.5, gt=1)  # alert when cost per 1,000 exceeds this x the trailing baseline
    min_baseline: int = Field(3, ge=1)  # trailing windows needed before judging


class PerformanceGate(BaseModel):
    """The floor a live model's performance must hold (realised or estimated); the alert rule reads it
    from the `model_performance_gate` gauge, so changing it here changes the alert."""

    model_config = _FROZEN
    min_roc_auc: float = Field(0.70, ge=0, le=1)


class ProfileParams(BaseModel):
    """How finely the reference profile bins the training data (keyword arguments of build_profile)."""

    model_config = _FROZEN
    numeric_bins: int = Field(10, ge=2)
    max_categories: int = Field(50, ge=1)
    max_other_keys: int = Field(1000, ge=0)
    prediction_bins: int = Field(10, ge=2)


class MonitoringParams(BaseModel):
    """Everything under params.yaml `monitoring:`."""

    model_config = _FROZEN
    profile: ProfileParams = Field(default_factory=ProfileParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    performance: PerformanceParams = Field(default_factory=PerformanceParams)
    cost: CostParams = Field(default_factory=CostParams)
    gate: PerformanceGate = Field(default_factory=PerformanceGate)
    retention_days: int = Field(90, ge=1)  # drift counts, usage and reports older than this are purged

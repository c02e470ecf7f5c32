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

Every section has defaults except the price table: cost figures need one (no default
price is a fact about anybody's bill).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from churnops.core.cost import CostParams
from churnops.core.drift import DriftParams
from churnops.core.performance import PerformanceParams

_FROZEN = ConfigDict(frozen=True, extra="forbid")


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

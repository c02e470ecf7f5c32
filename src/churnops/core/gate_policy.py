"""The promotion-gate policy: params.yaml's `gates:` mapping, validated.

Every gate runs with its defaults unless the mapping turns it off (`calibration: false`); an
unknown gate or a negative limit is refused with an error naming it:

    gates:
      discrimination: {min_auc_delta: 0.0, alpha: 0.05, method: delong}  # or paired_bootstrap
      calibration: {max_ece: 0.05, bins: 10}
      fairness: {max_demographic_parity: 0.2, max_equal_opportunity: 0.2, min_group_size: 30}
      latency: {max_p99_ms: 10.0}
      profit: {tolerance: 0.05, alpha: 0.05}  # share of the champion's profit it may lose
      golden: true
      validation: true
      approval: none                          # or required

What each gate means is in core.gates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from churnops.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")
# core.stats.DEFAULT_RESAMPLES (a test keeps them equal): not imported, so that core.params can mount
# the policy without loading scipy.
DEFAULT_RESAMPLES = 2000


class DiscriminationGate(BaseModel):
    """Paired test of candidate against champion AUC on rows neither trained on."""

    model_config = _FROZEN
    min_auc_delta: float = Field(0.0, ge=0, le=0.5)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    method: Literal["delong", "paired_bootstrap"] = "delong"
    resamples: int = Field(DEFAULT_RESAMPLES, ge=2000)
    seed: int = Field(0, ge=0)


class CalibrationGate(BaseModel):
    """Expected calibration error beyond what chance gives on the evaluation rows, at most `max_ece`."""

    model_config = _FROZEN
    max_ece: float = Field(0.05, ge=0, le=1)
    bins: int = Field(10, ge=2)


class FairnessGate(BaseModel):
    """Demographic-parity and equal-opportunity gaps over the spec's PII columns."""

    model_config = _FROZEN
    max_demographic_parity: float = Field(0.2, ge=0, le=1)
    max_equal_opportunity: float = Field(0.2, ge=0, le=1)
    min_group_size: int = Field(30, ge=1)


class LatencyGate(BaseModel):
    """Single-row latency p99 (golden requests on the compiled model) within a budget."""

    model_config = _FROZEN
    max_p99_ms: float = Field(10.0, ge=0)


class ProfitGate(BaseModel):
    """Per-prediction profit not worse than the champion's beyond a tolerance: the larger of
    `tolerance` x |champion's profit per prediction| and `tolerance_per_prediction` (currency)."""

    model_config = _FROZEN
    tolerance: float = Field(0.05, ge=0, le=1)
    tolerance_per_prediction: float = Field(0.0, ge=0)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    resamples: int = Field(DEFAULT_RESAMPLES, ge=2000)
    seed: int = Field(0, ge=0)


class GatesPolicy(BaseModel):
    """Which gates run and their limits; `None` turns a gate off."""

    model_config = _FROZEN
    discrimination: DiscriminationGate | None = Field(default_factory=DiscriminationGate)
    calibration: CalibrationGate | None = Field(default_factory=CalibrationGate)
    fairness: FairnessGate | None = Field(default_factory=FairnessGate)
    latency: LatencyGate | None = Field(default_factory=LatencyGate)
    profit: ProfitGate | None = Field(default_factory=ProfitGate)
    golden: bool = True
    validation: bool = True
    approval: Literal["required", "none"] = "none"


GATE_NAMES = tuple(GatesPolicy.model_fields)


def parse_gates(raw: Any, source: str = "params.yaml") -> GatesPolicy:
    """The policy from a `gates:` mapping (None or {} gives the defaults); errors name the field."""
    if raw is None:
        return GatesPolicy()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: gates: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(str(name) for name in raw if name not in GATE_NAMES)
    if unknown:
        raise ConfigError(f"{source}: gates.{unknown[0]}: unknown gate (known: {', '.join(GATE_NAMES)})")
    try:
        return GatesPolicy.model_validate({name: _switch(name, value) for name, value in raw.items()})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        got = f", got {first['input']!r}" if isinstance(first.get("input"), int | float | str) else ""
        raise ConfigError(f"{source}: gates.{where}: {first['msg']}{got}") from err


def _switch(name: str, value: Any) -> Any:
    """YAML shorthands: `gate: false` (or null) turns a gate off, `gate: true` keeps its defaults;
    `approval: true/false` means required/none."""
    if name == "approval" and isinstance(value, bool):
        return "required" if value else "none"
    if name == "approval" and value is None:
        return "none"
    if name in ("golden", "validation"):
        return False if value is None else value
    if value is True:
        return {}
    return None if value is False else value

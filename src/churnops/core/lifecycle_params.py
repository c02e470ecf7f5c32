"""params.yaml `lifecycle:`: what starts a cycle, what it retrains on, and the bake after a promotion.

    lifecycle:
      schedule: null            # e.g. 1d: retrain at least this often, whatever else happens
      min_interval: 1h          # drift, decay and the schedule retrain at most this often
      drift: {enabled: true, window: 1h, min_predictions: 1000}
      performance: {enabled: true, window: 30d, min_labels: 200, min_predictions: 1000, max_auc_drop: 0.05}
      new_data: {glob: null, settle: 10s, table: null, watermark_column: null}
      retrain: {source: auto, ledger_window: 90d, min_rows: 1000}
      trial: {mode: none, duration: 1h, share: 0.1, min_predictions: 200,  # mode: shadow | experiment
              deadline: null}  # null: duration + 24h
      bake: {duration: 1h, min_predictions: 200, deadline: null, max_error_rate: 0.01,
             max_latency_p95_ms: 100, max_prediction_psi: 0.25, max_auc_drop: 0.05, min_labels: 200}
      service_url: null         # the service whose /metrics the bake reads [default: CHURNOPS_HOST:PORT]

Durations are `<n><unit>` with unit s, m, h, d or w (`30s`, `5m`, `1h`, `1d`, `2w`); a bad one is
refused naming its field. What each part means is in jobs.lifecycle.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from churnops.errors import InvalidRequest

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_duration(text: str, field: str = "duration") -> float:
    """Seconds in '30s', '5m', '1h', '1d', '2w' (decimals allowed: '1.5h'); InvalidRequest otherwise."""
    try:
        return seconds(text)
    except ValueError as err:
        raise InvalidRequest(f"{field}: {err}", field) from err


def seconds(value: str) -> float:
    """Seconds in a duration; ValueError (the message names the value) when it is not one."""
    match = _DURATION.match(str(value).strip().lower())
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use a number and a unit: 30s, 5m, 1h, 1d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive(value: str) -> str:
    if seconds(value) <= 0:
        raise ValueError(f"{value!r} must be longer than 0")
    return value


def _not_negative(value: str) -> str:
    seconds(value)
    return value


Duration = Annotated[str, AfterValidator(_positive)]  # longer than 0
MaybeZero = Annotated[str, AfterValidator(_not_negative)]  # 0s allowed


DEADLINE_GRACE = "24h"  # a deadline left unset: this long after the duration


def deadline_seconds(duration: str, deadline: str | None) -> float:
    """When a bake or trial still short of its predictions ends inconclusive, from its start (without
    a deadline it would hold the loop for as long as no traffic came)."""
    return seconds(deadline) if deadline is not None else seconds(duration) + seconds(DEADLINE_GRACE)


def describe_deadline(duration: str, deadline: str | None) -> str:
    return deadline if deadline is not None else f"{duration} + {DEADLINE_GRACE}"


def _check_deadline(what: str, duration: str, deadline: str | None) -> None:
    if deadline is not None and seconds(deadline) < seconds(duration):
        raise ValueError(
            f"lifecycle.{what}.deadline {deadline} is shorter than lifecycle.{what}.duration {duration}"
        )


class DriftTrigger(BaseModel):
    """Retrain when the champion's served traffic drifts from its reference profile (an alert)."""

    model_config = _FROZEN
    enabled: bool = True
    window: Duration = "1h"
    min_predictions: int = Field(1000, ge=1)  # fewer in the window: not judged


class PerformanceTrigger(BaseModel):
    """Retrain when the champion's AUC decays: realised once `min_labels` labels are in, else estimated
    from its probabilities; decayed means below its evaluation AUC by more than `max_auc_drop`."""

    model_config = _FROZEN
    enabled: bool = True
    window: Duration = "30d"
    min_labels: int = Field(200, ge=1)
    min_predictions: int = Field(1000, ge=1)
    max_auc_drop: float = Field(0.05, ge=0, le=0.5)


class NewDataTrigger(BaseModel):
    """New labelled data: files matching `glob` not seen before, or rows of a SQL `table` past the
    watermark (the largest `watermark_column` value already trained on). A file counts once it has
    not changed for `settle` (one still being written or copied is left for a later cycle)."""

    model_config = _FROZEN
    glob: str | None = None
    settle: MaybeZero = "10s"
    table: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    watermark_column: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

    @model_validator(mode="after")
    def _table_needs_watermark(self) -> NewDataTrigger:
        if self.table is not None and self.watermark_column is None:
            raise ValueError("lifecycle.new_data.table needs watermark_column")
        return self


class RetrainParams(BaseModel):
    """What a cycle trains on: `new_data` (the file or table that triggered it), `ledger` (labelled
    predictions joined point in time to the offline store), or `auto` (new data, else the ledger)."""

    model_config = _FROZEN
    source: Literal["auto", "new_data", "ledger"] = "auto"
    ledger_window: Duration = "90d"
    min_rows: int = Field(1000, ge=50)


class BakeParams(BaseModel):
    """After a promotion, watch the new champion this long; a breach rolls back to the one it replaced."""

    model_config = _FROZEN
    duration: MaybeZero = "1h"  # 0s: no bake
    min_predictions: int = Field(200, ge=1)  # the bake ends only after this many predictions
    # Without them by then (from the start; None: duration + 24h), the bake ends `inconclusive`: the
    # champion stays and the loop goes on.
    deadline: Duration | None = None
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_latency_p95_ms: float = Field(100.0, gt=0)
    max_prediction_psi: float = Field(0.25, gt=0)
    max_auc_drop: float = Field(0.05, ge=0, le=0.5)  # vs the replaced champion (estimated or realised)
    min_labels: int = Field(200, ge=1)  # labels needed before the realised AUC is judged

    @model_validator(mode="after")
    def _deadline_after_duration(self) -> BakeParams:
        _check_deadline("bake", self.duration, self.deadline)
        return self


class TrialParams(BaseModel):
    """Live traffic before the champion alias moves, for a candidate the loop retrained that passed its
    gates: `shadow` scores `share` of the requests with it beside the champion (recorded, never
    answered), `experiment` answers `share` of the customers with it (an A/B test of two arms). Judged
    on the bake's limits once it lasted `duration` with `min_predictions` of its own; then promoted or
    rejected; one still short of `min_predictions` at `deadline` ends `inconclusive` (the candidate
    goes back to `candidate`, the champion stays). `none`: a candidate that passed its gates is
    promoted at once. With `gates.approval: required` the approver decides instead."""

    model_config = _FROZEN
    # YAML reads a bare `off` or `no` as false: that means no trial too.
    mode: Annotated[
        Literal["none", "shadow", "experiment"], BeforeValidator(lambda v: "none" if v is False else v)
    ] = "none"
    duration: Duration = "1h"
    share: float = Field(0.1, gt=0, lt=1)
    min_predictions: int = Field(200, ge=1)
    deadline: Duration | None = None  # from the start; None: duration + 24h

    @model_validator(mode="after")
    def _deadline_after_duration(self) -> TrialParams:
        _check_deadline("trial", self.duration, self.deadline)
        return self


class LifecycleParams(BaseModel):
    """Everything under params.yaml `lifecycle:`."""

    model_config = _FROZEN
    schedule: Duration | None = None
    min_interval: MaybeZero = "1h"
    drift: DriftTrigger = Field(default_factory=DriftTrigger)
    performance: PerformanceTrigger = Field(default_factory=PerformanceTrigger)
    new_data: NewDataTrigger = Field(default_factory=NewDataTrigger)
    retrain: RetrainParams = Field(default_factory=RetrainParams)
    trial: TrialParams = Field(default_factory=TrialParams)
    bake: BakeParams = Field(default_factory=BakeParams)
    service_url: str | None = Field(None, pattern=r"^https?://")

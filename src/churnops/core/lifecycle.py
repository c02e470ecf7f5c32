"""The lifecycle loop's decisions, pure: which triggers fire, whether a bake holds or breaks, and the
experiment a trial runs (it is judged on the bake's limits).

Inputs are plain figures measured by the caller (jobs.signals): the champion's served traffic
(error rate, latency p95, drift against its reference profile, realised and estimated AUC) and
what each version's evaluation showed (its AUC on the rows it was gated on, and the AUC its own
probabilities imply there, CBPE). Estimated AUC is compared with estimated AUC and realised with
realised, so a model is never judged against a figure of another kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from churnops.core.lifecycle_params import (
    BakeParams,
    LifecycleParams,
    TrialParams,
    deadline_seconds,
    describe_deadline,
    seconds,
)


@dataclass(frozen=True)
class Signals:
    """What one model version's served traffic showed over a window (None: not measured)."""

    version: str
    predictions: int = 0
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    drift_status: str | None = None  # ok | warn | alert | not_judged | no_data | no_profile
    drift_message: str = ""
    prediction_psi: float | None = None
    labels: int = 0
    auc_realised: float | None = None
    auc_estimated: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


@dataclass(frozen=True)
class Reference:
    """A version's figures on its own evaluation rows: realised AUC, and the AUC its probabilities imply."""

    auc: float | None = None
    expected_auc: float | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Reference:
        data = data or {}
        return cls(_float(data.get("auc")), _float(data.get("expected_auc")))


@dataclass(frozen=True)
class Trigger:
    name: Literal["schedule", "drift", "performance", "new_data", "manual"]
    reason: str


@dataclass(frozen=True)
class BakeVerdict:
    """`baking` (keep watching), `passed` (the bake is over), `breach` (roll back) or `inconclusive`
    (the deadline came before `min_predictions`: nothing to judge on), with reasons."""

    outcome: Literal["baking", "passed", "breach", "inconclusive"]
    reasons: tuple[str, ...] = field(default_factory=tuple)


def due_triggers(
    params: LifecycleParams,
    *,
    now_s: float,
    last_retrain_s: float | None,
    signals: Signals | None,
    reference: Reference,
    new_data: Sequence[str] = (),
) -> list[Trigger]:
    """The triggers that ask for a retraining now. New data always counts; schedule, drift and
    decay wait `min_interval` after the last retraining (a rejected candidate must not loop)."""
    fired: list[Trigger] = []
    if new_data:
        fired.append(Trigger("new_data", f"new data: {', '.join(new_data)}"))
    since = math.inf if last_retrain_s is None else now_s - last_retrain_s
    if since < seconds(params.min_interval):
        return fired
    if params.schedule is not None and since >= seconds(params.schedule):
        what = "no retraining yet" if last_retrain_s is None else f"last retraining {since / 3600:.1f} h ago"
        fired.append(Trigger("schedule", f"schedule every {params.schedule}: {what}"))
    if signals is not None:
        if params.drift.enabled and signals.drift_status == "alert":
            fired.append(Trigger("drift", f"drift alert on v{signals.version}: {signals.drift_message}"))
        decay = performance_decay(signals, reference, params)
        if params.performance.enabled and decay is not None:
            fired.append(Trigger("performance", decay))
    return fired


def performance_decay(signals: Signals, reference: Reference, params: LifecycleParams) -> str | None:
    """Why the champion's AUC counts as decayed (realised once enough labels, else estimated), or None."""
    perf = params.performance
    if signals.labels >= perf.min_labels and signals.auc_realised is not None and reference.auc is not None:
        floor = reference.auc - perf.max_auc_drop
        if signals.auc_realised < floor:
            return (
                f"realised AUC {signals.auc_realised:.4f} on {signals.labels} labels below "
                f"{floor:.4f} (evaluation {reference.auc:.4f} - {perf.max_auc_drop:g})"
            )
        return None
    estimated, expected = signals.auc_estimated, reference.expected_auc
    if signals.predictions >= perf.min_predictions and estimated is not None and expected is not None:
        floor = expected - perf.max_auc_drop
        if estimated < floor:
            return (
                f"estimated AUC {estimated:.4f} on {signals.predictions} predictions (labels immature) below "
                f"{floor:.4f} (evaluation {expected:.4f} - {perf.max_auc_drop:g})"
            )
    return None


def judge_bake(
    bake: BakeParams, signals: Signals, replaced: Reference, *, started_s: float, now_s: float
) -> BakeVerdict:
    """Breach as soon as any watched figure is out of bounds; passed once the bake lasted its duration
    with at least `min_predictions` predictions; inconclusive at its deadline without them; baking
    otherwise."""
    reasons = bake_breaches(bake, signals, replaced)
    if reasons:
        return BakeVerdict("breach", tuple(reasons))
    elapsed = now_s - started_s
    if elapsed >= seconds(bake.duration) and signals.predictions >= bake.min_predictions:
        return BakeVerdict(
            "passed", (f"{signals.predictions} predictions over {elapsed:.0f} s with no breach",)
        )
    if elapsed >= deadline_seconds(bake.duration, bake.deadline):
        return BakeVerdict(
            "inconclusive",
            (
                f"{signals.predictions} predictions over {elapsed:.0f} s, fewer than the "
                f"{bake.min_predictions} it needs, by its deadline "
                f"({describe_deadline(bake.duration, bake.deadline)})",
            ),
        )
    return BakeVerdict("baking", (f"{signals.predictions} predictions over {elapsed:.0f} s so far",))


CONTROL_ARM, CANDIDATE_ARM, CANDIDATE_SHADOW = "control", "candidate", "candidate-shadow"


def trial_experiment(name: str, champion: str, candidate: str, trial: TrialParams) -> dict[str, Any]:
    """The experiment a trial runs, pinned to versions: `experiment` splits customers between the
    champion (control) and the candidate by `share`; `shadow` answers everyone with the champion and
    scores `share` of the requests with the candidate beside it (its arm is kept at weight 0, paused:
    an experiment has two arms at least)."""
    percent = round(trial.share * 100, 6)
    served = percent if trial.mode == "experiment" else 0.0
    definition: dict[str, Any] = {
        "name": name,
        "mode": "fixed",
        "arms": [
            {"name": CONTROL_ARM, "version": champion, "weight": 100 - served, "control": True},
            {"name": CANDIDATE_ARM, "version": candidate, "weight": served},
        ],
    }
    if trial.mode == "shadow":
        definition["shadows"] = [{"name": CANDIDATE_SHADOW, "version": candidate, "sample": trial.share}]
    return definition


def trial_limits(params: LifecycleParams) -> BakeParams:
    """A trial is judged like a bake (error rate, latency, prediction drift, AUC against the champion)
    over its own length and prediction count."""
    t = params.trial
    lengths = {"duration": t.duration, "deadline": t.deadline, "min_predictions": t.min_predictions}
    return params.bake.model_copy(update=lengths)


def bake_breaches(bake: BakeParams, s: Signals, replaced: Reference) -> list[str]:
    """Every bound the new champion's traffic broke (error rate and latency at once; drift and AUC once
    the window holds `min_predictions`)."""
    found = []
    if s.error_rate is not None and s.error_rate > bake.max_error_rate:
        found.append(f"error rate {s.error_rate:.2%} > {bake.max_error_rate:.2%}")
    if s.latency_p95_ms is not None and s.latency_p95_ms > bake.max_latency_p95_ms:
        found.append(f"latency p95 {s.latency_p95_ms:.1f} ms > {bake.max_latency_p95_ms:g} ms")
    if s.predictions < bake.min_predictions:
        return found
    if s.prediction_psi is not None and s.prediction_psi > bake.max_prediction_psi:
        found.append(
            f"prediction drift PSI {s.prediction_psi:.3f} > {bake.max_prediction_psi:g} "
            f"against v{s.version}'s reference"
        )
    if s.labels >= bake.min_labels and s.auc_realised is not None and replaced.auc is not None:
        floor = replaced.auc - bake.max_auc_drop
        if s.auc_realised < floor:
            found.append(
                f"realised AUC {s.auc_realised:.4f} on {s.labels} labels < {floor:.4f} "
                f"(the replaced champion's {replaced.auc:.4f} - {bake.max_auc_drop:g})"
            )
    elif s.auc_estimated is not None and replaced.expected_auc is not None:
        floor = replaced.expected_auc - bake.max_auc_drop
        if s.auc_estimated < floor:
            found.append(
                f"estimated AUC {s.auc_estimated:.4f} on {s.predictions} predictions < {floor:.4f} "
                f"(the replaced champion's {replaced.expected_auc:.4f} - {bake.max_auc_drop:g})"
            )
    return found


def _float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None

"""A trial between the gates and the champion alias: the loop's candidate meets live traffic first.

With params.yaml `lifecycle.trial.mode` set to `shadow` or `experiment`, a version the loop
retrained that passed its gates is registered `in_trial` (the challenger), not champion
(jobs.promote). Then:

1. `start_trial` runs an experiment pinned to the champion and the candidate
   (core.lifecycle.trial_experiment): `experiment` serves the candidate to `share` of the
   customers, `shadow` scores `share` of the requests with it beside the champion. The experiment
   reaches every worker through the change feed like any other; only one runs at a time, so a
   trial waits while someone else's experiment runs.
2. `trial_step` (every cycle, before anything is retrained) judges the candidate's own traffic
   on the bake's limits (error rate, latency p95, prediction drift against its reference, AUC
   against the champion's): a breach rejects it at once; once the trial lasted `duration` with
   `min_predictions`, it is promoted through the promotion path (its gates run again against the
   champion of the moment, and a bake follows as after any promotion).

Either way the experiment stops and the decision is recorded: `models.promote` or `models.reject`
(in `models history`, with the trial's reasons) and a `lifecycle.trial` event with its signals.
A person can cut a trial short: promoting the candidate (`models promote`) or moving the champion
ends it (its experiment stops with the move: jobs.promote). A trial still short of its
predictions at `deadline` (by default 24h after its duration) ends inconclusive: the candidate goes back to
`candidate`, the champion stays, and the loop retrains again when a trigger fires (a bake without
traffic ends the same way at its own deadline, and its champion stays).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from churnops.core.lifecycle import judge_bake, trial_experiment, trial_limits
from churnops.core.lifecycle_params import deadline_seconds, seconds
from churnops.errors import Conflict
from churnops.io.registry import CHAMPION, STATUS_TAG
from churnops.jobs.experiments import create
from churnops.jobs.lifecycle_steps import (
    CycleResult,
    SourceFactory,
    conclude,
    default_source,
    model_of,
    reference_of,
)
from churnops.jobs.move_evidence import move_details
from churnops.jobs.promote import IN_TRIAL, TRIAL, Lifecycle, end_trial_experiment, trial_experiments
from churnops.jobs.promote import promote as promote_path

logger = logging.getLogger(__name__)


def after_registration(lc: Lifecycle, result: CycleResult, principal: str | None) -> CycleResult:
    """A cycle whose candidate went `in_trial`: start its trial (the cycle's outcome says so)."""
    if result.outcome != IN_TRIAL or result.version is None:
        return result
    started = start_trial(lc, result.version, principal)
    result.outcome = started.outcome
    result.reasons += started.reasons
    return result


def start_trial(lc: Lifecycle, version: str, principal: str | None) -> CycleResult:
    """Run the trial's experiment for `version` against the champion, or wait for a free slot."""
    name = lc.model()
    champion = lc.registry.alias_version(name, CHAMPION)
    trial = lc.params.lifecycle.trial
    state: dict[str, Any] = {
        "model": name,
        "version": version,
        "champion": champion,
        "mode": trial.mode,
        "experiment": None,
        "started_us": None,
    }
    lc.state.put(TRIAL, state)
    return _begin(lc, state, principal)


def _begin(lc: Lifecycle, state: dict[str, Any], principal: str | None) -> CycleResult:
    trial = lc.params.lifecycle.trial
    version = state["version"]
    experiment = f"lifecycle-v{version}-{time.time_ns() // 1_000_000}"
    definition = trial_experiment(experiment, state["champion"], version, trial)
    try:
        create(trial_experiments(lc, state["model"]), definition, principal)
    except Conflict as err:  # another experiment runs: one at a time over the served traffic
        return CycleResult("trial_waiting", [f"trial of v{version} waits: {err}"], version=version)
    now_us = time.time_ns() // 1000
    state |= {"experiment": experiment, "started_us": now_us, "until_us": now_us + _us(trial.duration)}
    state["deadline_us"] = now_us + int(deadline_seconds(trial.duration, trial.deadline) * 1e6)
    lc.state.put(TRIAL, state)
    how = "served to" if trial.mode == "experiment" else "scored beside the champion on"
    reason = (
        f"trial of v{version} started: experiment {experiment}, {how} {trial.share:.0%} of the traffic "
        f"for {trial.duration} and {trial.min_predictions} predictions at least"
    )
    logger.info("%s", reason)
    return CycleResult("trial_started", [reason], version=version)


def trial_step(
    lc: Lifecycle, principal: str | None, make_source: SourceFactory = default_source
) -> CycleResult | None:
    """Judge the trial under way (None when there is none): `trialling`, `trial_waiting`, `promoted`,
    `rejected` or `trial_ended` (a person or a rollback decided meanwhile)."""
    state = lc.state.get(TRIAL)
    name = model_of(lc)
    if state is None or name is None or state.get("model") != name:
        return None
    version = str(state["version"])
    status = lc.registry.version_tags(name, version).get(STATUS_TAG)
    champion = lc.registry.alias_version(name, CHAMPION)
    ended = None
    if status != IN_TRIAL:
        ended = f"trial of v{version} ended: v{version} is {status or 'candidate'} now"
    elif champion != state["champion"]:
        ended = f"trial of v{version} ended: the champion moved from v{state['champion']} to v{champion}"
    if ended is not None:
        end_trial_experiment(lc, state["model"], principal)
        lc.state.delete(TRIAL)
        return CycleResult("trial_ended", [ended], version=version)
    if state["experiment"] is None:
        return _begin(lc, state, principal)
    limits = trial_limits(lc.params.lifecycle)
    shadow = state["mode"] == "shadow"
    signals = make_source(lc, name).signals(
        version, int(state["started_us"]), limits.min_predictions, shadow=shadow
    )
    replaced = reference_of(lc, name, champion)
    verdict = judge_bake(limits, signals, replaced, started_s=state["started_us"] / 1e6, now_s=time.time())
    data = {"signals": signals.to_dict(), "champion": asdict(replaced), "experiment": state["experiment"]}
    if verdict.outcome == "baking":
        reasons = [f"trial of v{version} ({state['mode']}): {'; '.join(verdict.reasons)}"]
        return CycleResult("trialling", reasons, version=version, data=data)
    end_trial_experiment(lc, state["model"], principal)
    why = "; ".join(verdict.reasons)
    if verdict.outcome == "breach":
        result = _reject(lc, name, version, champion, f"trial breach: {why}", principal)
    elif verdict.outcome == "inconclusive":
        result = _inconclusive(lc, name, version, champion, f"trial inconclusive: {why}", principal)
    else:
        result = _promote(lc, name, version, state, f"trial passed: {why}", principal)
    result.data = data
    return conclude(lc, "trial", TRIAL, result, principal)


def _promote(
    lc: Lifecycle, name: str, version: str, state: dict[str, Any], reason: str, principal: str | None
) -> CycleResult:
    trigger = f"lifecycle:trial:{state['experiment']}"
    try:
        move = promote_path(lc, version, trigger=trigger, principal=principal, model=name, reason=reason)
    except Conflict as err:  # its gates, run again against today's champion, refused it
        return CycleResult("rejected", [reason, str(err)], version=version)
    outcome = "promoted" if move.outcome == CHAMPION else move.outcome
    return CycleResult(outcome, [reason, move.reason], version=version, event_id=move.event_id)


def _reject(
    lc: Lifecycle, name: str, version: str, champion: str | None, reason: str, principal: str | None
) -> CycleResult:
    ending = TrialEnding("rejected", "rejected", "models.reject", "trial", "refused")
    return _not_promoted(lc, name, version, champion, reason, principal, ending)


def _inconclusive(
    lc: Lifecycle, name: str, version: str, champion: str | None, reason: str, principal: str | None
) -> CycleResult:
    """Too little traffic by the deadline to judge it: back to `candidate` (a person may still promote
    it), the champion stays, and the loop may retrain again."""
    ending = TrialEnding("trial_inconclusive", "candidate", "models.trial", "inconclusive", "not judged")
    return _not_promoted(lc, name, version, champion, reason, principal, ending)


@dataclass(frozen=True)
class TrialEnding:
    """How a trial that moves no alias is recorded: cycle outcome, version status, event and action."""

    outcome: str
    status: str
    event: str
    action: str
    verb: str  # "v2 refused: ...", "v2 not judged: ..."


def _not_promoted(
    lc: Lifecycle,
    name: str,
    version: str,
    champion: str | None,
    reason: str,
    principal: str | None,
    ending: TrialEnding,
) -> CycleResult:
    text = f"v{version} {ending.verb}: {reason}"
    details = move_details(name, version, champion, "lifecycle:trial", ending.status, text, None, None)
    details["action"] = ending.action

    def then(conn: Any) -> None:
        lc.registry.set_version_tags(name, version, {STATUS_TAG: ending.status})

    event_id, _ = lc.events.append(ending.event, details, principal, then=then)
    logger.warning("%s v%s: %s", name, version, text)
    return CycleResult(ending.outcome, [reason], version=version, event_id=event_id)


def _us(duration: str) -> int:
    return int(seconds(duration) * 1e6)

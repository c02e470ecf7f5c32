"""The one promotion path: every move of the `champion` alias goes through `promote`.

Registration, `churnops models promote`, rollback (by hand or by a failed bake), approval, the
lifecycle loop and an experiment's winner all call it. In order it

1. runs the gates of params.yaml `gates:` against the current champion (a rollback restores a
   former champion and skips them; an approval uses the verdicts that made the version pending),
2. decides: a failed gate rejects (unless forced: an override recorded with the failed gates), a
   version that passed waits for approval when `gates.approval: required`, else it moves,
3. writes the new champion's references (the validation profile later data is checked against),
4. records the ledger event (who, from, to, trigger, verdicts, override) and, in the same
   transaction, the `aliases` change-feed row and the bake to run; the MLflow alias moves inside
   that transaction, so a move whose event cannot be stored is not made,
5. tags the version with its status and keeps the verdicts with it (`lifecycle/gates.json`).

A version the lifecycle loop retrained waits `in_trial` instead, when params.yaml
`lifecycle.trial` asks for live traffic first (jobs.lifecycle_trial promotes or rejects it).

Events: `models.register` and `models.promote` (champion moved), `models.pending`, `models.trial`,
`models.reject`, `models.approve`, `models.rollback`; `lifecycle.*` for the loop's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from churnops.core.lifecycle_params import deadline_seconds, seconds
from churnops.core.params import Params
from churnops.errors import Conflict, NotFound
from churnops.io.change_feed import ChangeFeed
from churnops.io.event_log import EventLog
from churnops.io.experiment_store import RUNNING, ExperimentStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.lifecycle_store import LifecycleStore
from churnops.io.privacy_store import publish_in
from churnops.io.registry import CHALLENGER, CHAMPION, STATUS_TAG, MlflowRegistry
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_store import SqlStore
from churnops.jobs.experiments import Experiments, stop
from churnops.jobs.gate_check import GateCheck, check_gates
from churnops.jobs.move_evidence import move_details, move_reason
from churnops.jobs.version_files import load_gates, restore_validation_reference, save_gates
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

logger = logging.getLogger(__name__)

ALIASES_TOPIC = "aliases"
MOVES = ("register", "promote", "approve", "rollback")
BAKE = "bake"
TRIAL = "trial"  # the lifecycle state of a trial under way (jobs.lifecycle_trial)
IN_TRIAL = "in_trial"


@dataclass
class Lifecycle:
    """The stores every alias move needs, opened once (a CLI command's, or a serving worker's)."""

    settings: Settings
    params: Params
    registry: MlflowRegistry
    sql: SqlStore
    events: EventLog
    keys: Secrets
    state: LifecycleStore = field(init=False)

    def __post_init__(self) -> None:
        self.state = LifecycleStore(self.sql)

    def model(self, requested: str | None = None) -> str:
        return self.registry.resolve_name(requested or self.settings.model_name)

    def ring(self, change_id: int) -> None:
        """Wake every worker at once where Redis is set (they also poll the change counter)."""
        ChangeFeed(self.sql, self.settings.shared_redis_url).ring(change_id)


@contextmanager
def open_lifecycle(
    settings: Settings, params: Params | None = None, registry: MlflowRegistry | None = None
) -> Iterator[Lifecycle]:
    from churnops.io.datasets import load_params
    from churnops.jobs.registry_access import registry_for

    if settings.sql_store_url.startswith("sqlite"):
        settings.ensure_home()
    params = params or load_params(None)
    sql = SqlStore(settings.sql_store_url)
    keys = load_secrets(settings)
    try:
        events = EventLog(LedgerStore(sql), keys, params.ledger.key_epoch_days)
        yield Lifecycle(settings, params, registry or registry_for(settings), sql, events, keys)
    finally:
        sql.close()


@dataclass(frozen=True)
class Move:
    """What one call of the promotion path did."""

    action: str
    model: str
    version: str
    previous: str | None
    outcome: str  # champion | pending_approval | rejected | unchanged
    reason: str
    event_id: str | None = None
    gates: dict[str, Any] | None = None
    override: dict[str, Any] | None = None

    @property
    def moved(self) -> bool:
        return self.outcome == CHAMPION and self.previous != self.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "model": self.model,
            "version": self.version,
            "from": self.previous,
            "outcome": self.outcome,
            "moved": self.moved,
            "reason": self.reason,
            "event_id": self.event_id,
            "gates": self.gates,
            "override": self.override,
        }


def promote(
    lc: Lifecycle,
    version: str,
    *,
    action: str = "promote",
    trigger: str = "manual",
    principal: str | None,
    model: str | None = None,
    force: bool = False,
    check: GateCheck | None = None,
    workdir: Workdir | None = None,
    reason: str | None = None,
    bake: bool = True,
) -> Move:
    """Run the path for `version` (see the module docstring); returns what was done.

    `action` names the caller (register, promote, approve, rollback). A refused `promote` raises
    Conflict with one line naming the failed gate; registration returns the refusal instead.
    """
    if action not in MOVES:
        raise ValueError(f"unknown action {action!r}")
    name = lc.model(model)
    if not version.isdigit() or not lc.registry.version_exists(name, version):
        raise NotFound(f"{name} has no version {version!r}")
    previous = lc.registry.alias_version(name, CHAMPION)
    if previous == version and action != "register":
        return Move(action, name, version, previous, "unchanged", f"v{version} is already the champion")
    gates = _gates_for(lc, name, version, action, check, workdir)
    failed = [v["name"] for v in gates.get("verdicts", []) if not v["passed"]] if gates else []
    pending = gates is not None and gates.get("status") == "pending_approval" and action != "approve"
    if (failed or pending) and not force:
        return _hold(lc, name, version, previous, action, trigger, principal, gates, failed)
    if _trial_first(lc, action, trigger, previous, force):
        return _hold_for_trial(lc, name, version, previous, trigger, principal, gates)
    forced = force and (failed or pending)
    override = {"forced": True, "failed_gates": failed, "approval_skipped": pending} if forced else None
    text = reason or move_reason(action, version, previous, gates, override)
    return _move(lc, name, version, previous, action, trigger, principal, gates, override, text, bake)


def _gates_for(
    lc: Lifecycle, name: str, version: str, action: str, check: GateCheck | None, workdir: Workdir | None
) -> dict[str, Any] | None:
    """The verdicts this move rests on (None for a rollback: it restores a former champion)."""
    if action == "rollback":
        return None
    if action == "approve":
        status = lc.registry.version_tags(name, version).get(STATUS_TAG)
        if status != "pending_approval":
            raise Conflict(f"v{version} is not pending approval (status: {status or 'candidate'})")
        stored = load_gates(lc.registry, name, version)
        if stored is None:
            raise Conflict(f"v{version} keeps no gate verdicts to approve")
        return stored
    check = check or check_gates(
        lc.registry, lc.params, name, version, workdir=workdir, pseudonym_key=lc.keys.pseudonym_key
    )
    evidence = check.to_dict()
    save_gates(lc.registry, name, version, evidence)
    lc.registry.set_version_tags(
        name, version, {"churnops.gates": check.status, "churnops.gates.champion": check.champion or "none"}
    )
    return evidence


def _hold(
    lc: Lifecycle,
    name: str,
    version: str,
    previous: str | None,
    action: str,
    trigger: str,
    principal: str | None,
    gates: dict[str, Any] | None,
    failed: list[str],
) -> Move:
    """Refused (a gate failed) or waiting for approval: nothing moves but the challenger alias of a
    newly registered version."""
    outcome = "rejected" if failed else "pending_approval"
    if failed:
        first = next(v for v in (gates or {}).get("verdicts", []) if not v["passed"])
        text = f"v{version} refused: gate {first['name']} failed: {first['reason']}"
    else:
        text = f"v{version} passed its gates and waits for approval (`churnops models approve {version}`)"
    details = move_details(name, version, previous, trigger, outcome, text, gates, None)

    def then(conn: sa.Connection) -> None:
        lc.registry.set_version_tags(name, version, {STATUS_TAG: outcome})
        if action == "register" or outcome == "pending_approval":
            lc.registry.set_alias(name, CHALLENGER, version)

    event = "models.reject" if failed else "models.pending"
    event_id, _ = lc.events.append(event, details | {"action": action}, principal, then=then)
    logger.info("%s v%s: %s", name, version, text)
    move = Move(action, name, version, previous, outcome, text, event_id, gates)
    if failed and action != "register":
        raise Conflict(text + " (use --force to override: the override is recorded)")
    return move


def _trial_first(lc: Lifecycle, action: str, trigger: str, previous: str | None, force: bool) -> bool:
    """A version the loop retrained meets live traffic before it replaces a champion, when
    params.yaml `lifecycle.trial.mode` asks for it (jobs.lifecycle_trial runs and judges the trial)."""
    trial = lc.params.lifecycle.trial.mode != "none"
    return (
        action == "register"
        and trigger.startswith("lifecycle:")
        and trial
        and previous is not None
        and not force
    )


def _hold_for_trial(
    lc: Lifecycle,
    name: str,
    version: str,
    previous: str | None,
    trigger: str,
    principal: str | None,
    gates: dict[str, Any] | None,
) -> Move:
    """Passed its gates; the challenger now, `in_trial` until its trial promotes or rejects it."""
    trial = lc.params.lifecycle.trial
    what = "requests scored beside the champion" if trial.mode == "shadow" else "customers served by it"
    text = (
        f"v{version} passed its gates; a {trial.mode} trial decides ({trial.share:.0%} of {what}, "
        f"for {trial.duration} and {trial.min_predictions} predictions at least)"
    )
    details = move_details(name, version, previous, trigger, IN_TRIAL, text, gates, None)

    def then(conn: sa.Connection) -> None:
        lc.registry.set_version_tags(name, version, {STATUS_TAG: IN_TRIAL})
        lc.registry.set_alias(name, CHALLENGER, version)

    event_id, _ = lc.events.append("models.trial", details | {"action": "register"}, principal, then=then)
    logger.info("%s v%s: %s", name, version, text)
    return Move("register", name, version, previous, IN_TRIAL, text, event_id, gates)


def _move(
    lc: Lifecycle,
    name: str,
    version: str,
    previous: str | None,
    action: str,
    trigger: str,
    principal: str | None,
    gates: dict[str, Any] | None,
    override: dict[str, Any] | None,
    reason: str,
    bake: bool,
) -> Move:
    restore_validation_reference(lc.registry, lc.settings.home, name, version)
    details = move_details(name, version, previous, trigger, CHAMPION, reason, gates, override)
    bake_state = _bake_state(lc, name, version, previous, action) if bake else None
    if bake_state:
        details["bake"] = {"until_us": bake_state["until_us"], "duration": lc.params.lifecycle.bake.duration}

    def then(conn: sa.Connection) -> int:
        change = publish_in(conn, ALIASES_TOPIC, {"model": name, "champion": version, "previous": previous})
        if bake_state:
            lc.state.put(BAKE, bake_state, conn)
        elif action == "rollback":
            lc.state.delete(BAKE, conn)
        lc.registry.set_alias(name, CHAMPION, version)  # last: the transaction commits only if it moved
        return change

    try:
        event_id, change = lc.events.append(f"models.{action}", details, principal, then=then)
    except BaseException:
        _restore_alias(lc, name, previous, version)
        raise
    lc.ring(change)
    _after_move(lc, name, version, previous, override)
    try:
        end_trial_experiment(lc, name, principal)
    except Exception as err:  # the move is committed; the next cycle stops the experiment anyway
        logger.warning("the trial's experiment was not stopped with the move (%s): the next cycle will", err)
    logger.info(
        "%s: champion v%s (was %s): %s", name, version, f"v{previous}" if previous else "unset", reason
    )
    return Move(action, name, version, previous, CHAMPION, reason, event_id, gates, override)


def _after_move(
    lc: Lifecycle, name: str, version: str, previous: str | None, override: dict[str, Any] | None
) -> None:
    """Tags only (the move itself is recorded): the new champion, the replaced one, the challenger."""
    tags = {STATUS_TAG: CHAMPION} | ({"churnops.override": "forced"} if override else {})
    lc.registry.set_version_tags(name, version, tags)
    if previous is not None:
        lc.registry.set_version_tags(name, previous, {STATUS_TAG: "retired"})
    if lc.registry.alias_version(name, CHALLENGER) == version:
        lc.registry.delete_alias(name, CHALLENGER)


def trial_experiments(lc: Lifecycle, model: str) -> Experiments:
    """The experiment commands on this lifecycle's stores (a trial's experiment is an ordinary one)."""
    return Experiments(lc.settings, lc.sql, ExperimentStore(lc.sql), lc.events, lc.registry, model)


def end_trial_experiment(lc: Lifecycle, name: str, principal: str | None) -> None:
    """Stop the experiment of the trial under way for `name`, if it still runs. Every champion move
    calls it (by hand, a rollback, or the trial's own promotion), so serving follows the aliases
    again within the change feed's 2 s; the next cycle records the trial's end."""
    trial = lc.state.get(TRIAL)
    if not trial or trial.get("model") != name or not trial.get("experiment"):
        return
    ctx = trial_experiments(lc, name)
    try:
        running = ctx.store.get(trial["experiment"]).status == RUNNING
    except NotFound:
        return
    if running:
        stop(ctx, trial["experiment"], principal)


def _restore_alias(lc: Lifecycle, name: str, previous: str | None, version: str) -> None:
    """The event did not commit: put the alias back where it was if it had already moved."""
    try:
        if lc.registry.alias_version(name, CHAMPION) == version and previous is not None:
            lc.registry.set_alias(name, CHAMPION, previous)
    except Exception as err:  # the original failure is what the caller must see
        logger.error("could not restore champion v%s after a failed event write: %s", previous, err)


def _bake_state(
    lc: Lifecycle, name: str, version: str, previous: str | None, action: str
) -> dict[str, Any] | None:
    """A promotion (not a rollback, not a first champion) starts a bake of the configured length."""
    bake = lc.params.lifecycle.bake
    duration = seconds(bake.duration)
    if action == "rollback" or previous is None or duration <= 0:
        return None
    now_us = time.time_ns() // 1000
    return {
        "model": name,
        "version": version,
        "previous": previous,
        "started_us": now_us,
        "until_us": now_us + int(duration * 1e6),
        "deadline_us": now_us + int(deadline_seconds(bake.duration, bake.deadline) * 1e6),
    }

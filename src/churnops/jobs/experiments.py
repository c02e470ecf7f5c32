"""Experiments: create, change weights, stop, promote; results from the ledger's real outcomes.

Definitions live in the SQL store (`io/experiment_store.py`) and reach every serving worker and
replica through the change feed within 2 s. Every change is also a ledger event (who, what, why)
written in the same transaction. One experiment runs at a time over the served traffic
(overlapping experiments are not layered): creating a second one while one runs is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from churnops.core.assignment import BucketTable, allocate, moved_fraction
from churnops.core.auc import delong_auc_se
from churnops.core.bandit import ArmPosterior, thompson_weights
from churnops.core.experiments import ExperimentDefinition, ExperimentDefinitionError, parse_experiment
from churnops.core.params import BusinessParams
from churnops.core.results import ArmData, summarise_experiment
from churnops.core.sequential import SequentialResult
from churnops.core.stats import MeanSummary, unit_values
from churnops.errors import Conflict, InvalidRequest, NotFound
from churnops.io.event_log import EventLog
from churnops.io.experiment_store import PROMOTED, RUNNING, STOPPED, ExperimentStore, StoredExperiment
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.registry import MlflowRegistry
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_schema import feature_sets, ledger_records
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Experiments:
    """What experiment commands work on, opened once."""

    settings: Settings
    sql: SqlStore
    store: ExperimentStore
    events: EventLog
    registry: MlflowRegistry
    model_name: str


@contextmanager
def open_experiments(settings: Settings, keys: Secrets | None = None) -> Iterator[Experiments]:
    from churnops.jobs.registry_access import registry_for

    if settings.sql_store_url.startswith("sqlite"):
        settings.ensure_home()
    sql = SqlStore(settings.sql_store_url)
    try:
        registry = registry_for(settings)
        events = EventLog(LedgerStore(sql), keys or load_secrets(settings))
        yield Experiments(
            settings, sql, ExperimentStore(sql), events, registry, registry.resolve_name(settings.model_name)
        )
    finally:
        sql.close()


def create(
    ctx: Experiments, raw: Mapping[str, Any] | ExperimentDefinition, principal: str | None
) -> dict[str, Any]:
    """Validate (fields, versions, feature sets), then store, record and announce a running experiment."""
    definition = raw if isinstance(raw, ExperimentDefinition) else parse_experiment(raw)
    _check_versions(ctx, definition)
    table = allocate(definition.weights())
    payload = definition.model_dump(mode="json")
    event_id, stored = ctx.events.append(
        "experiments.create",
        {"experiment": definition.name, "arms": {a.name: a.version for a in definition.arms}},
        principal,
        then=lambda conn: ctx.store.create(payload, table.to_dict(), principal, conn),
    )
    logger.info(
        "experiment %s created (%d arms, %d shadows)",
        definition.name,
        len(definition.arms),
        len(definition.shadows),
    )
    return describe(stored) | {"event_id": event_id}


def reweight(
    ctx: Experiments, name: str, weights: Mapping[str, float], principal: str | None, action: str = "reweight"
) -> dict[str, Any]:
    """New weights for a running experiment: only the customers whose bucket changes arm move."""
    current = _running(ctx, name)
    definition = parse_experiment(current.definition)
    unknown = sorted(set(weights) - {a.name for a in definition.arms})
    if unknown:
        raise ExperimentDefinitionError(f"weights: no arm named {unknown[0]!r} in {name!r}", "weights")
    changed = definition.with_weights({**definition.weights(), **weights})
    old = BucketTable.from_dict(current.bucket_table)
    table = allocate(changed.weights(), previous=old)
    moved = moved_fraction(old, table)
    event_id, revision = ctx.events.append(
        f"experiments.{action}",
        {"experiment": name, "weights": changed.weights(), "moved_share": round(moved, 5)},
        principal,
        then=lambda conn: ctx.store.update(
            conn,
            current,
            action,
            principal,
            definition=changed.model_dump(mode="json"),
            table=table.to_dict(),
            details={"moved_share": moved},
        ),
    )
    return {
        "name": name,
        "revision": revision,
        "weights": changed.weights(),
        "moved_share": moved,
        "event_id": event_id,
    }


def stop(ctx: Experiments, name: str, principal: str | None) -> dict[str, Any]:
    current = _running(ctx, name)
    event_id, revision = ctx.events.append(
        "experiments.stop",
        {"experiment": name},
        principal,
        then=lambda conn: ctx.store.update(conn, current, "stop", principal, status=STOPPED),
    )
    return {"name": name, "status": STOPPED, "revision": revision, "event_id": event_id}


def promote(ctx: Experiments, name: str, arm: str, principal: str | None) -> dict[str, Any]:
    """Make the arm's pinned version champion (through the promotion path) and end the experiment."""
    from churnops.jobs.models import promote as promote_version

    current = ctx.store.get(name)
    if current.status != RUNNING:
        raise Conflict(
            f"experiment {name!r} is {current.status}: only a running experiment's arm is promoted"
        )
    definition = parse_experiment(current.definition)
    chosen = next((a for a in definition.arms if a.name == arm), None)
    if chosen is None:
        names = ", ".join(a.name for a in definition.arms)
        raise NotFound(f"experiment {name!r} has no arm {arm!r} (arms: {names})")
    model = chosen.model or ctx.model_name
    # The winner goes through the promotion path (gates, its own event); only a move ends the experiment.
    move = promote_version(
        ctx.settings, chosen.version, model, principal=principal, trigger=f"experiment:{name}:{arm}"
    )
    event_id, revision = ctx.events.append(
        "experiments.promote",
        {"experiment": name, "arm": arm, "version": chosen.version, "alias_event": move.event_id},
        principal,
        then=lambda conn: ctx.store.update(conn, current, "promote", principal, status=PROMOTED, winner=arm),
    )
    return {
        "name": name,
        "arm": arm,
        "model": model,
        "version": chosen.version,
        "previous_champion": move.previous,
        "revision": revision,
        "event_id": event_id,
    }


def describe(stored: StoredExperiment) -> dict[str, Any]:
    table = BucketTable.from_dict(stored.bucket_table)
    return {
        "name": stored.name,
        "status": stored.status,
        "revision": stored.revision,
        "definition": stored.definition,
        "buckets": table.counts(),
        "created_at_us": stored.created_at_us,
        "updated_at_us": stored.updated_at_us,
        "created_by": stored.created_by,
        "winner": stored.winner,
    }


def results(
    ctx: Experiments, name: str, business: BusinessParams, record_look: bool = True
) -> dict[str, Any]:
    """Per arm: counts, realised metrics with intervals, SRM, sequential tests with Holm, a decision."""
    stored = ctx.store.get(name)
    definition = parse_experiment(stored.definition)
    counts, thresholds = _served(ctx.sql, name)
    labelled = FeedbackStore(LedgerStore(ctx.sql)).labelled()
    mine = labelled[(labelled["experiment"] == name) & (labelled["role"] == "served")]
    data = {}
    for arm in definition.arms:
        rows = mine[mine["variant"] == arm.name]
        data[arm.name] = ArmData(
            assigned=counts.get(arm.name, 0),
            served=counts.get(arm.name, 0),
            y_true=rows["churned"].astype(np.int64).to_numpy(),
            proba=rows["probability"].astype(np.float64).to_numpy(),
            threshold=thresholds.get(arm.name, 0.5),
        )
    previous = {arm: SequentialResult.from_dict(look) for arm, look in stored.looks.items()}
    summary = summarise_experiment(definition, data, business, previous=previous or None)
    if record_look and stored.status == RUNNING:
        ctx.store.save_looks(name, {arm: test.to_dict() for arm, test in summary.tests.items()})
    return {"status": stored.status, "revision": stored.revision, **summary.to_dict()}


def bandit_update(ctx: Experiments, name: str, business: BusinessParams) -> dict[str, Any]:
    """One scheduled Thompson-sampling update of a bandit experiment's weights, from the ledger's
    labels on the primary metric (equal weights during burn-in, a floor per arm), recorded."""
    current = _running(ctx, name)
    definition = parse_experiment(current.definition)
    if definition.mode != "bandit":
        raise InvalidRequest(f"experiment {name!r} is in {definition.mode} mode, not bandit", "mode")
    labelled = FeedbackStore(LedgerStore(ctx.sql)).labelled()
    mine = labelled[(labelled["experiment"] == name) & (labelled["role"] == "served")]
    posteriors = [_posterior(definition, arm.name, mine, business) for arm in definition.arms]
    update = thompson_weights(
        posteriors,
        lower_is_better=definition.lower_is_better,
        burn_in_labels=definition.min_labels_per_arm,
        floor=definition.bandit_floor,
        total=sum(definition.weights().values()),
        seed=current.revision,
    )
    if update.weights == definition.weights():
        return {"name": name, "revision": current.revision, "changed": False, "reason": update.reason}
    changed = reweight(ctx, name, update.weights, "bandit", action="bandit")
    return changed | {"changed": True, "reason": update.reason, "prob_best": update.prob_best}


def _posterior(
    definition: ExperimentDefinition, arm: str, rows: Any, business: BusinessParams
) -> ArmPosterior:
    mine = rows[rows["variant"] == arm]
    y = mine["churned"].astype(np.int64).to_numpy()
    p = mine["probability"].astype(np.float64).to_numpy()
    if definition.primary_metric == "auc":
        if y.size < 2 or y.min() == y.max():
            return ArmPosterior(arm, float("nan"), float("nan"), int(y.size))
        auc, se = delong_auc_se(y, p)
        return ArmPosterior.from_auc(arm, auc, se, int(y.size))
    threshold = float(mine["threshold"].mean()) if len(mine) else 0.5
    values = unit_values(definition.primary_metric, y, p, threshold, business) if y.size else np.zeros(0)
    return ArmPosterior.from_summary(arm, MeanSummary.from_values(values))


def _served(sql: SqlStore, name: str) -> tuple[dict[str, int], dict[str, float]]:
    """Served predictions and the mean decision threshold per arm, from the ledger."""
    r = ledger_records.c
    query = (
        sa.select(r.variant, sa.func.count(), sa.func.avg(r.threshold))
        .where(r.kind == "prediction", r.experiment == name, r.role == "served")
        .group_by(r.variant)
    )
    with sql.ready().connect() as conn:
        rows = conn.execute(query).all()
    return {str(v): int(n) for v, n, _ in rows}, {str(v): float(t) for v, _, t in rows if t is not None}


def _running(ctx: Experiments, name: str) -> StoredExperiment:
    current = ctx.store.get(name)
    if current.status != RUNNING:
        raise Conflict(f"experiment {name!r} is {current.status}, not running")
    return current


def _check_versions(ctx: Experiments, definition: ExperimentDefinition) -> None:
    """Every arm and shadow names a registered version whose feature set the service can read."""
    with ctx.sql.ready().connect() as conn:
        served_sets = {str(v) for v in conn.execute(sa.select(feature_sets.c.version)).scalars()}
    pinned = [(f"arms[{i}]", a.model, a.version) for i, a in enumerate(definition.arms)]
    pinned += [(f"shadows[{i}]", s.model, s.version) for i, s in enumerate(definition.shadows)]
    for where, model, version in pinned:
        name = model or ctx.model_name
        if not ctx.registry.version_exists(name, version):
            raise ExperimentDefinitionError(
                f"{where}.version: {name} has no version {version!r}", f"{where}.version"
            )
        feature_set = _feature_set(ctx.registry, name, version)
        if feature_set not in served_sets:
            raise ExperimentDefinitionError(
                f"{where}.version: {name} v{version} reads feature set {feature_set!r}, which the offline"
                " store does not hold: it cannot be served (run its pipeline first)",
                f"{where}.version",
            )


def _feature_set(registry: MlflowRegistry, name: str, version: str) -> str | None:
    tags = registry.client.get_model_version(name, version).tags or {}
    found = tags.get("feature_set_version")
    if found:
        return str(found)
    try:
        return str(registry.load_bundle(name, version).metadata["feature_set_version"])
    except (KeyError, InvalidRequest) as err:
        raise ExperimentDefinitionError(f"{name} v{version}: no feature set recorded ({err})") from err

"""The running experiment in a worker: arms and shadows as verified slots, and the assignment.

Built off the event loop when an experiment is created, changed or stopped (the change feed),
then swapped in with one assignment: a request routes by the snapshot it started with. Arms
pin versions, so a moving alias never changes what an arm serves mid-test. An arm on another
feature set than the champion reads its own vectors (its own feature source), never the
champion's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churnops.core.assignment import Assigner, BucketTable
from churnops.core.experiments import ExperimentDefinition, parse_experiment
from churnops.core.ledger import SHADOW
from churnops.io.experiment_store import StoredExperiment
from churnops.serving.features import FeatureSource
from churnops.serving.scorer import FeatureRules
from churnops.serving.slots import ModelSlot, build_slot

if TYPE_CHECKING:
    from churnops.serving.state import ServiceState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where one model of the experiment (an arm or a shadow) reads and scores."""

    slot: ModelSlot
    features: FeatureSource
    rules: FeatureRules


@dataclass(frozen=True)
class ActiveExperiment:
    name: str
    revision: int
    definition: ExperimentDefinition
    assigner: Assigner
    arms: Mapping[str, Route]
    shadows: Mapping[str, Route] = field(default_factory=dict)

    def versions(self) -> dict[str, str]:
        return {name: route.slot.version for name, route in {**self.arms, **self.shadows}.items()}


def load_experiment(state: ServiceState, stored: StoredExperiment) -> ActiveExperiment:
    """Load, compile and golden-check every pinned version (blocking: run it in a thread)."""
    definition = parse_experiment(stored.definition)
    assigner = Assigner.for_experiment(definition, BucketTable.from_dict(stored.bucket_table))
    loaded: dict[tuple[str, str], ModelSlot] = {}
    for slot in state.slots.all():  # champion and CHURNOPS_VARIANTS: already compiled and verified
        loaded[(slot.model_name, slot.version)] = slot
    previous = state.experiment
    if previous is not None:
        for route in (*previous.arms.values(), *previous.shadows.values()):
            loaded[(route.slot.model_name, route.slot.version)] = route.slot
    arms = {
        a.name: _route(state, loaded, a.model or state.model_name, a.version, a.name) for a in definition.arms
    }
    shadows = {
        s.name: _route(state, loaded, s.model or state.model_name, s.version, s.name)
        for s in definition.shadows
    }
    logger.info(
        "experiment %s rev %d: %s", stored.name, stored.revision,
        ", ".join(f"{n}=v{r.slot.version}" for n, r in {**arms, **shadows}.items()),
    )  # fmt: skip
    return ActiveExperiment(stored.name, stored.revision, definition, assigner, arms, shadows)


def _route(
    state: ServiceState, loaded: dict[tuple[str, str], ModelSlot], model: str, version: str, variant: str
) -> Route:
    known = loaded.get((model, version))
    if known is None:
        known = loaded[(model, version)] = build_slot(
            model, version, variant, state.registry.load_bundle(model, version)
        )
    slot = known if known.variant == variant else ModelSlot(model, version, variant, known.bundle, known.fast)
    feature_set = str(slot.bundle.metadata.get("feature_set_version"))
    return Route(slot, state.features_for(feature_set), FeatureRules(slot.bundle.spec))


@dataclass
class ShadowRunner:
    """Scores shadows after the response is on its way: never on the response's critical path, and a
    failing or slow shadow never touches the served answer (it is counted and logged)."""

    scored: int = 0
    failed: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def schedule(self, state: ServiceState, job: ShadowJob) -> None:
        asyncio.get_running_loop().call_soon(self._start, state, job)

    def _start(self, state: ServiceState, job: ShadowJob) -> None:
        for name in job.names:
            route = job.experiment.shadows[name]
            if route.features is job.served_features:  # same feature set: score from the vector read
                self._score(state, job, name, route, job.stored)
            else:
                task = asyncio.get_running_loop().create_task(self._read_and_score(state, job, name, route))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _read_and_score(self, state: ServiceState, job: ShadowJob, name: str, route: Route) -> None:
        try:
            stored = await asyncio.wait_for(route.features.get(job.customer_id), SHADOW_READ_S)
        except Exception as err:  # a shadow's failure is its own: counted, never raised into serving
            self._failed(state, job, name, err)
            return
        self._score(state, job, name, route, stored)

    def _score(
        self, state: ServiceState, job: ShadowJob, name: str, route: Route, stored: tuple[Any, str]
    ) -> None:
        from churnops.serving import scorer

        try:
            now_ns = time.time_ns()
            result, record, reasons = scorer.predict(
                route.slot, stored, route.rules, job.customer_id, job.overrides, job.request_id,
                state.ids.next(now_ns),
            )  # fmt: skip
            if state.monitor is not None:
                state.monitor.observe(route.slot, record, result["churn_probability"], -1.0)
            if state.ledger is not None:
                state.ledger.submit(
                    scorer.ledger_entry(
                        route.slot,
                        result,
                        record,
                        reasons,
                        job.request_id,
                        job.principal,
                        now_ns,
                        SHADOW,
                        job.experiment.name,
                        job.bucket,
                    )
                )
        except Exception as err:  # counted per shadow; the served answer is already sent
            self._failed(state, job, name, err)
            return
        self.scored += 1
        state.metrics.observe_shadow(job.experiment.name, name, "ok")

    def _failed(self, state: ServiceState, job: ShadowJob, name: str, err: BaseException) -> None:
        self.failed += 1
        state.metrics.observe_shadow(job.experiment.name, name, type(err).__name__)
        logger.warning("shadow %s of %s failed: %s: %s", name, job.experiment.name, type(err).__name__, err)


@dataclass(frozen=True)
class ShadowJob:
    experiment: ActiveExperiment
    names: tuple[str, ...]
    customer_id: str
    overrides: Mapping[str, Any] | None
    stored: tuple[Any, str]
    served_features: FeatureSource
    request_id: str
    principal: str | None
    bucket: int


SHADOW_READ_S = 0.1


async def run_bandit(state: ServiceState, stop: asyncio.Event) -> None:
    """Supervised: every CHURNOPS_BANDIT_SECONDS, re-weight a running bandit experiment from its labels.

    Every worker and replica tries; the revision's compare-and-set lets one win each round and the
    others see a Conflict (expected, not an error). The new weights reach everyone via the change feed.
    """
    from churnops.errors import Conflict
    from churnops.jobs.experiments import bandit_update

    interval = state.settings.bandit_seconds
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        experiment = state.experiment
        if experiment is None or experiment.definition.mode != "bandit":
            continue
        try:
            done = await asyncio.to_thread(
                bandit_update, state.experiments(), experiment.name, state.business
            )
        except Conflict:
            continue  # another worker updated this round
        logger.info("bandit %s: %s", experiment.name, done.get("reason"))

"""What a serving process holds: settings, live model slots, the online store, metrics."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from churnops.core.breaker import CircuitBreaker
from churnops.core.ledger import RecordIds
from churnops.core.params import BusinessParams
from churnops.errors import NotReady
from churnops.io.change_feed import ChangeFeed, open_change_feed
from churnops.io.event_log import EventLog
from churnops.io.experiment_store import ExperimentStore, StoredExperiment, experiment_limits
from churnops.io.feedback_store import FeedbackStore
from churnops.io.online_store import InMemoryOnlineStore
from churnops.io.registry import CHAMPION, MlflowRegistry
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_store import SqlStore
from churnops.jobs.experiments import Experiments
from churnops.jobs.privacy import Privacy
from churnops.serving.changes import ChangeFollower
from churnops.serving.experiment_routing import ActiveExperiment, ShadowRunner, load_experiment
from churnops.serving.features import EmbeddedFeatures, FeatureSource, OfflineLookup, RedisFeatures
from churnops.serving.ledger_writer import LedgerWriter, open_ledger
from churnops.serving.metrics import ServiceMetrics
from churnops.serving.monitoring import ServingMonitor
from churnops.serving.scorer import FeatureRules
from churnops.serving.slots import ModelSlot, SlotManager, build_slot
from churnops.serving.supervisor import Supervisor
from churnops.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Built once in the lifespan and shared by every request of this worker."""

    settings: Settings
    registry: MlflowRegistry
    model_name: str
    slots: SlotManager
    features: FeatureSource
    rules: FeatureRules
    metrics: ServiceMetrics
    feature_set_version: str
    registry_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    ids: RecordIds = field(default_factory=RecordIds)  # prediction ids (UUIDv7)
    keys: Secrets | None = None
    ledger: LedgerWriter | None = None
    events: EventLog | None = None
    feed: ChangeFeed | None = None
    follower: ChangeFollower | None = None
    supervisor: Supervisor | None = None
    monitor: ServingMonitor | None = None  # drift counts and cost accounting (None: CHURNOPS_MONITORING=off)
    monitor_reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # the gauges' source
    monitor_context: Any = None  # serving.monitoring.MonitorContext, opened on first use
    failed_loads: dict[tuple[str, str], float] = field(default_factory=dict)  # (alias, version) -> when
    label_window_days: int = 60
    business: BusinessParams = field(default_factory=BusinessParams)
    experiment: ActiveExperiment | None = None  # the running experiment's arms and shadows, if any
    experiment_store: ExperimentStore | None = None
    extra_features: dict[str, FeatureSource] = field(default_factory=dict)  # other feature sets
    shadows: ShadowRunner = field(default_factory=ShadowRunner)
    request_ids: Any = field(default_factory=lambda: itertools.count(1))
    id_prefix: str = field(default_factory=lambda: f"{os.getpid():x}{secrets.token_hex(3)}")
    ready: bool = False

    def next_request_id(self) -> str:
        """Unique across workers (pid + random prefix) and cheap: no uuid per request."""
        return f"{self.id_prefix}-{next(self.request_ids):x}"

    def champion(self) -> ModelSlot:
        slot = self.slots.champion
        if slot is None:
            raise NotReady("no champion model is loaded yet")
        return slot

    def refresh_gauges(self) -> None:
        """Copy breaker states and feature-store stats into the metrics (read at /metrics time)."""
        breaker = getattr(self.features, "breaker", None)
        if breaker is not None:
            self.metrics.breakers["online_store"] = int(breaker.state)
        offline = getattr(self.features, "offline", None)
        if offline is not None:
            self.metrics.breakers["offline_store"] = int(offline.breaker.state)
        self.metrics.breakers["registry"] = int(self.registry_breaker.state)
        self.metrics.feature_store = {self.features.kind: self.features.stats()}
        if self.ledger is not None:
            counters = self.ledger.counters
            self.metrics.audit = {
                **counters.outcomes,
                "queue_depth": self.ledger.depth(),
                "spool_bytes": self.ledger.spool_bytes(),
                "write_seconds_sum": counters.write_seconds_sum,
                "writes": counters.writes,
                "seal_seconds_sum": counters.seal_seconds_sum,
                "sealed": counters.sealed,
                "vectors_sealed": self.ledger.sealer.vectors_sealed,
            }
        experiment = self.experiment
        self.metrics.experiment_weights = (
            {} if experiment is None else {experiment.name: experiment.definition.weights()}
        )
        if self.supervisor is not None:
            self.metrics.tasks_up = self.supervisor.gauges()
            self.metrics.task_restarts = self.supervisor.restarts()

    def features_for(self, feature_set: str) -> FeatureSource:
        """The feature source of a feature set: the champion's, or one opened for it (blocking)."""
        if feature_set == self.feature_set_version:
            return self.features
        found = self.extra_features.get(feature_set)
        if found is None:
            found = self.extra_features[feature_set] = open_features(self.settings, feature_set)
        return found

    def experiments(self) -> Experiments:
        """What the experiment routes work on: this worker's stores, registry and event log."""
        if self.events is None or self.experiment_store is None:
            raise NotReady("the prediction ledger is off (CHURNOPS_AUDIT=off): experiments need it")
        sql = self.experiment_store.store
        return Experiments(
            self.settings, sql, self.experiment_store, self.events, self.registry, self.model_name
        )

    def require_keys(self) -> Secrets:
        if self.keys is None:
            raise NotReady("the service's secrets are not loaded yet")
        return self.keys

    def feedback_store(self) -> FeedbackStore:
        if self.events is None:
            raise NotReady("the prediction ledger is off (CHURNOPS_AUDIT=off): no labels can be joined")
        return FeedbackStore(self.events.store)

    def privacy(self) -> Privacy:
        """The stores a privacy request works on: this worker's ledger connection and event log."""
        if self.events is None or self.keys is None:
            raise NotReady("the prediction ledger is off (CHURNOPS_AUDIT=off): privacy requests need it")
        store = self.events.store
        return Privacy(self.settings, store.store, store, FeedbackStore(store), self.events, self.keys)

    def problems(self) -> list[str]:
        """Why this worker is not ready, if it is not (readiness reports them)."""
        found = [] if self.ready else ["the service is still starting"]
        if self.supervisor is not None:
            health = self.supervisor.health
            found += [
                f"background task {name} keeps failing ({health[name].last_error})"
                for name in self.supervisor.unhealthy()
            ]
        if self.ledger is not None and not self.ledger.healthy():
            found.append(
                "the prediction ledger cannot store records (database and spool failing, or queue full)"
            )
        return found

    def refresh_model_info(self) -> None:
        self.metrics.set_models(
            (s.model_name, s.version, s.variant, s.bundle.candidate) for s in self.slots.all()
        )


def load_slot(registry: MlflowRegistry, model_name: str, alias: str) -> ModelSlot | None:
    """Load, compile and verify the version an alias points at (None if the alias is unset)."""
    version = registry.alias_version(model_name, alias)
    if version is None:
        return None
    return build_slot(model_name, version, alias, registry.load_bundle(model_name, version))


def build_state(settings: Settings, registry: MlflowRegistry | None = None) -> ServiceState:
    """Resolve the model, load champion (+ variants), fill the embedded online store, open the
    ledger and the change feed."""
    from churnops.io.datasets import load_params

    feed = open_change_feed(settings.sql_store_url, settings.online_store_url)
    start_id = _change_feed_position(feed)  # before loading: a change made meanwhile is still seen
    registry = registry or MlflowRegistry(
        settings.tracking_uri, settings.artifact_root, settings.experiment_name
    )
    model_name = registry.resolve_name(settings.model_name)
    slots = SlotManager()
    for alias in (CHAMPION, *settings.variants):
        slot = load_slot(registry, model_name, alias)
        if slot is None:
            if alias == CHAMPION:
                raise NotReady(f"{model_name} has no `champion` alias: run `churnops models promote VERSION`")
            logger.warning("variant %r: alias not set on %s, skipped", alias, model_name)
            continue
        slots.swap(slot)
    champion = slots.champion
    assert champion is not None
    version = str(champion.bundle.metadata["feature_set_version"])
    features = open_features(settings, version)
    metrics = ServiceMetrics(settings.metrics_dir)
    rules = FeatureRules(champion.bundle.spec)
    state = ServiceState(settings, registry, model_name, slots, features, rules, metrics, version)
    state.keys = load_secrets(settings)
    params = load_params(None)
    state.label_window_days, state.business = params.ledger.label_window_days, params.business
    if settings.audit == "on":
        state.ledger, state.events = open_ledger(settings, state.keys, params.ledger.key_epoch_days)
    else:
        logger.warning("CHURNOPS_AUDIT=off: predictions are NOT recorded in the ledger (never in production)")
    state.feed, state.follower = feed, ChangeFollower(feed, start_id)
    if settings.monitoring == "on":
        share = 1.0 / settings.serve_workers
        state.monitor = ServingMonitor(state.id_prefix, settings.cost_sample, share)
    state.experiment_store = ExperimentStore(SqlStore(settings.sql_store_url, experiment_limits()))
    running = _running_experiment(state)
    if running is not None:
        state.experiment = load_experiment(state, running)
    state.refresh_model_info()
    state.ready = True
    return state


def _running_experiment(state: ServiceState) -> StoredExperiment | None:
    from churnops.io.offline_store import DEPENDENCY_DOWN

    assert state.experiment_store is not None
    try:
        return state.experiment_store.running()
    except DEPENDENCY_DOWN as err:  # serving starts on the champion; the change feed brings it later
        logger.warning("experiments unreadable at start-up (%s): serving the champion", type(err).__name__)
        return None


def _change_feed_position(feed: ChangeFeed) -> int:
    from churnops.io.offline_store import DEPENDENCY_DOWN

    try:
        return feed.latest_id()
    except DEPENDENCY_DOWN as err:
        logger.warning(
            "change feed unreadable at start-up (%s): following from the start", type(err).__name__
        )
        return 0


def latest_from_offline(settings: Settings, version: str) -> dict[str, dict[str, Any]]:
    """Every customer's newest vector of one feature set, from the offline store."""
    from churnops.io.offline_store import SqlOfflineStore

    offline = SqlOfflineStore(settings.offline_store_url)
    try:
        return offline.latest_vectors(version)
    finally:
        offline.close()


def open_features(settings: Settings, version: str) -> FeatureSource:
    """Embedded: the in-process map. Redis: cache + breaker-guarded async reader, with the offline
    store's vectors as the stale baseline (if the offline store is down too, the baseline starts empty)."""
    url = settings.shared_redis_url
    if url is None:
        vectors = latest_from_offline(settings, version)
        logger.info("online store (in-process): %d customers of feature set %s", len(vectors), version)
        return EmbeddedFeatures(InMemoryOnlineStore(vectors))
    from churnops.io.offline_store import DEPENDENCY_DOWN
    from churnops.io.online_store import AsyncRedisOnlineReader

    try:
        baseline = latest_from_offline(settings, version)
    except DEPENDENCY_DOWN as err:  # serving starts on Redis alone, and says so
        logger.warning("offline store unreachable (%s): stale fallback starts empty", type(err).__name__)
        baseline = {}
    reader = AsyncRedisOnlineReader(url, version)
    offline = _offline_lookup(settings, version)
    logger.info(
        "online store (redis): feature set %s, %d customers in the stale baseline", version, len(baseline)
    )
    breaker = CircuitBreaker(failure_threshold=3, reset_after=1.0)
    return RedisFeatures(reader, baseline, breaker, failures=reader.failures, offline=offline)


def _offline_lookup(settings: Settings, version: str) -> OfflineLookup:
    """Read-through engine of its own: few connections, short connect and statement timeouts."""
    from churnops.io.offline_store import DEPENDENCY_DOWN, PoolLimits, SqlOfflineStore

    limits = PoolLimits(
        pool_size=4, max_overflow=0, pool_timeout_s=0.05, connect_timeout_s=1, statement_timeout_ms=200
    )
    store = SqlOfflineStore(settings.offline_store_url, limits=limits)
    return OfflineLookup(
        lambda entity: store.latest_vector(version, entity),
        CircuitBreaker(failure_threshold=3, reset_after=1.0),
        DEPENDENCY_DOWN,
        pool_status=store.pool_status,
    )

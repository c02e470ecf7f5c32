"""What a serving process holds: settings, live model slots, the online store, metrics."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from churnops.core.breaker import CircuitBreaker
from churnops.errors import NotReady
from churnops.io.online_store import InMemoryOnlineStore, OnlineStore
from churnops.io.registry import CHAMPION, MlflowRegistry
from churnops.serving.metrics import ServiceMetrics
from churnops.serving.scorer import FeatureRules
from churnops.serving.slots import ModelSlot, SlotManager, build_slot
from churnops.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Built once in the lifespan and shared by every request of this worker."""

    settings: Settings
    registry: MlflowRegistry
    model_name: str
    slots: SlotManager
    online: OnlineStore
    rules: FeatureRules
    metrics: ServiceMetrics
    feature_set_version: str
    registry_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
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
    """Resolve the model, load champion (+ variants), and fill the embedded online store."""
    from churnops.io.offline_store import SqlOfflineStore

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
    offline = SqlOfflineStore(settings.offline_store_url)
    try:
        version = champion.bundle.metadata["feature_set_version"]
        online = InMemoryOnlineStore.from_offline(offline, version)
    finally:
        offline.close()
    logger.info("online store: %d customers of feature set %s", len(online), version)
    metrics = ServiceMetrics(settings.metrics_dir)
    rules = FeatureRules(champion.bundle.spec)
    state = ServiceState(settings, registry, model_name, slots, online, rules, metrics, version)
    state.refresh_model_info()
    state.ready = True
    return state

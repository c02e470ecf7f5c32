"""Zero-downtime model reloads: poll the registry aliases, load beside, verify, swap."""

from __future__ import annotations

import asyncio
import logging
import time

from churnops.core.breaker import CircuitBreaker
from churnops.errors import ChurnopsError
from churnops.io.registry import CHAMPION
from churnops.serving.features import FeatureSource
from churnops.serving.scorer import FeatureRules
from churnops.serving.slots import ModelSlot, build_slot
from churnops.serving.state import ServiceState, open_features

logger = logging.getLogger(__name__)

REGISTRY_TIMEOUT_S = 10.0
LOAD_RETRY_S = 60.0  # a version that failed to load is tried again after this long


async def watch_aliases(state: ServiceState, stop: asyncio.Event) -> None:
    """Every `reload_poll_seconds`, follow any alias that moved (champion and the variants)."""
    interval = state.settings.reload_poll_seconds
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            await poll_once(state)


async def poll_once(state: ServiceState) -> int:
    """One poll; returns the number of slots swapped. Failures keep the current models serving."""
    breaker = state.registry_breaker
    if not breaker.allow():
        _export_breaker(state, breaker)
        return 0
    swapped = 0
    for alias in (CHAMPION, *state.settings.variants):
        try:
            version = await asyncio.wait_for(
                asyncio.to_thread(state.registry.alias_version, state.model_name, alias), REGISTRY_TIMEOUT_S
            )
        except Exception as err:
            breaker.record_failure()
            state.metrics.registry_errors += 1
            logger.warning(
                "registry poll failed (%s: %s); keeping the loaded models", type(err).__name__, err
            )
            break
        breaker.record_success()
        current = state.slots.get(alias)
        if version is not None and (current is None or current.version != version):
            swapped += await _swap_in(state, alias, version, current)
    _export_breaker(state, breaker)
    return swapped


async def _swap_in(state: ServiceState, alias: str, version: str, current: ModelSlot | None) -> int:
    failed_at = state.failed_loads.get((alias, version))
    if failed_at is not None and time.monotonic() - failed_at < LOAD_RETRY_S:
        return 0  # this version failed to load moments ago: keep serving, retry later
    try:
        slot, features = await asyncio.to_thread(_load, state, alias, version)
    except Exception as err:  # any failure to load a version keeps the verified one serving
        state.failed_loads[(alias, version)] = time.monotonic()
        state.metrics.model_load_failures += 1
        kept = current.version if current else "none"
        if isinstance(err, ChurnopsError):
            logger.error("%s v%s not loaded, keeping v%s: %s", alias, version, kept, err)
        else:
            logger.error("%s v%s not loaded, keeping v%s", alias, version, kept, exc_info=err)
        return 0
    state.failed_loads.pop((alias, version), None)
    # No await between these assignments: requests see the old pair or the new pair, never a mix.
    if features is not None:
        old, state.features = state.features, features
        state.feature_set_version = str(slot.bundle.metadata["feature_set_version"])
        state.rules = FeatureRules(slot.bundle.spec)
        asyncio.get_running_loop().create_task(old.close())
    state.slots.swap(slot)
    state.metrics.swaps += 1
    state.refresh_model_info()
    logger.info("%s: now v%s (was v%s)", alias, version, current.version if current else "none")
    return 1


def _load(state: ServiceState, alias: str, version: str) -> tuple[ModelSlot, FeatureSource | None]:
    """Load and verify a version, and the feature source of its feature set when that differs."""
    bundle = state.registry.load_bundle(state.model_name, version)
    slot = build_slot(state.model_name, version, alias, bundle)
    wanted = str(bundle.metadata.get("feature_set_version"))
    if alias != CHAMPION or wanted == state.feature_set_version:
        return slot, None
    return slot, open_features(state.settings, wanted)


def _export_breaker(state: ServiceState, breaker: CircuitBreaker) -> None:
    state.metrics.breakers["registry"] = int(breaker.state)

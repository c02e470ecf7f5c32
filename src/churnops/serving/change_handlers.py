"""What each topic of the change feed does to this worker's state.

Topics: `privacy` (a customer was erased: drop every in-process copy of their data);
`aliases` (the promotion path moved an alias: poll the registry now instead of within the
poll interval); more (`keys`, `experiments`) register here as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from churnops.core.ledger import pseudonym
from churnops.serving.changes import ChangeFollower

if TYPE_CHECKING:
    from churnops.serving.state import ServiceState

logger = logging.getLogger(__name__)

PRIVACY = "privacy"
EXPERIMENTS = "experiments"
SECOND_PASS_S = 1.0
ALIASES = "aliases"


def follow_changes(state: ServiceState, follower: ChangeFollower) -> None:
    async def on_privacy(payload: dict[str, Any]) -> None:
        if payload.get("action") == "erase":
            subject = str(payload["subject"])
            await forget_subject(state, subject)
            # Reads that were in flight during the erasure may have cached the vector again: look twice.
            asyncio.get_running_loop().call_later(
                SECOND_PASS_S, lambda: asyncio.ensure_future(forget_subject(state, subject))
            )

    async def on_aliases(payload: dict[str, Any]) -> None:
        from churnops.serving.reload import poll_once

        if payload.get("model") in (None, state.model_name):
            await poll_once(state)

    follower.on(PRIVACY, on_privacy)
    follower.on(ALIASES, on_aliases)

    async def on_experiment(payload: dict[str, Any]) -> None:
        await refresh_experiment(state)

    follower.on(EXPERIMENTS, on_experiment)


async def refresh_experiment(state: ServiceState) -> None:
    """Route by the running experiment as stored now: load its versions off the loop, then swap."""
    from churnops.serving.experiment_routing import load_experiment

    store = state.experiment_store
    if store is None:
        return
    running = await asyncio.to_thread(store.running)
    current = state.experiment
    if running is None:
        if current is not None:
            logger.info("experiment %s ended: the champion serves everyone", current.name)
        state.experiment = None
        return
    if current is not None and (current.name, current.revision) == (running.name, running.revision):
        return
    try:
        loaded = await asyncio.to_thread(load_experiment, state, running)
    except Exception as err:  # a version that cannot load keeps the previous routing serving
        state.metrics.model_load_failures += 1
        logger.error("experiment %s rev %d not loaded", running.name, running.revision, exc_info=err)
        return
    state.experiment = loaded  # one assignment: a request routes by the old or the new, never a mix


async def forget_subject(state: ServiceState, subject: str) -> int:
    """Erasure in this worker: vectors in the online-store copies, cached pseudonyms and data keys."""
    keys = state.keys
    if keys is None:
        return 0
    # The feed carries the pseudonym only: find the matching ids by hashing what this worker holds.
    ids = await asyncio.to_thread(
        lambda: [c for c in state.features.entity_ids() if pseudonym(keys.pseudonym_key, c) == subject]
    )
    removed = state.features.forget(ids)
    for sealer in (w.sealer for w in (state.ledger, state.events) if w is not None):
        sealer.forget(subject)
    logger.info("erasure applied in this worker: %d cached vectors dropped", removed)
    return removed

"""What each topic of the change feed does to this worker's state.

Topics: `privacy` (a customer was erased: drop every in-process copy of their data);
more (`keys`, `experiments`, `aliases`) register here as they arrive.
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
SECOND_PASS_S = 1.0


def follow_changes(state: ServiceState, follower: ChangeFollower) -> None:
    async def on_privacy(payload: dict[str, Any]) -> None:
        if payload.get("action") == "erase":
            subject = str(payload["subject"])
            await forget_subject(state, subject)
            # Reads that were in flight during the erasure may have cached the vector again: look twice.
            asyncio.get_running_loop().call_later(
                SECOND_PASS_S, lambda: asyncio.ensure_future(forget_subject(state, subject))
            )

    follower.on(PRIVACY, on_privacy)


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

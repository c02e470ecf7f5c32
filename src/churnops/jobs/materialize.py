"""Materialize: the latest feature vector of every entity, offline store -> online store (Redis).

The offline store is read in batches and each batch is written with pipelined
`SET ... EX` (see `RedisOnlineStore.write_many`), so memory stays bounded by one
batch when the offline store can stream (`iter_latest`). With the embedded
in-process online store there is nothing to write: each serving process fills
its own from the offline store at start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from typing import Any

import sqlalchemy as sa

from churnops.core.params import OnlineStoreParams
from churnops.errors import NotFound
from churnops.io.offline_store import (
    OfflineStore,
    SqlOfflineStore,
    feature_rows,
    feature_sets,
    open_offline_store,
)
from churnops.io.online_store import RedisOnlineStore
from churnops.settings import Settings, mask_url

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (entities written, entities total)
Batch = list[tuple[str, dict[str, Any]]]
BATCH_ENTITIES = 10_000  # per offline read; the online store pipelines its own 5,000-key chunks

MEMORY_NOTE = (
    "online store is in-process (memory://): each serving process loads the latest vectors from "
    "the offline store at start-up, so there is nothing to materialize. Set REDIS_URL to use Redis."
)


def materialize(
    settings: Settings,
    version: str | None = None,
    progress: Progress | None = None,
    *,
    params: OnlineStoreParams | None = None,
    batch_size: int = BATCH_ENTITIES,
) -> dict[str, Any]:
    """Write every entity's latest vector of `version` (default: the newest feature set) to Redis.

    Returns the store, version, entities written, TTL and timings. Does nothing
    (and says why in `message`) when the online store is in-process.
    """
    url = settings.shared_redis_url
    if url is None:
        logger.info("materialize: %s", MEMORY_NOTE)
        return {"store": "memory", "version": version, "entities": 0, "seconds": 0.0, "message": MEMORY_NOTE}
    ttl = (params or OnlineStoreParams()).ttl_seconds
    started = time.perf_counter()
    with ExitStack() as stack:
        offline = stack.enter_context(closing(open_offline_store(settings.offline_store_url)))
        version = _resolve_version(offline, version)
        total = count_entities(offline, version)
        logger.info("materialize: %d entities of feature set %s -> %s", total, version, mask_url(url))
        online = stack.enter_context(closing(RedisOnlineStore(url, version, ttl)))
        written, write_seconds = _copy(offline, online, version, total, progress, batch_size)
    seconds = time.perf_counter() - started
    logger.info("materialize: wrote %d vectors in %.2f s (%.2f s writing)", written, seconds, write_seconds)
    return {
        "store": "redis",
        "url": mask_url(url),
        "version": version,
        "entities": written,
        "ttl_seconds": ttl,
        "seconds": round(seconds, 3),
        "write_seconds": round(write_seconds, 3),
        "read_seconds": round(seconds - write_seconds, 3),
    }


def _copy(
    offline: SqlOfflineStore,
    online: RedisOnlineStore,
    version: str,
    total: int,
    progress: Progress | None,
    batch_size: int,
) -> tuple[int, float]:
    """Stream batches from offline to online; returns (vectors written, seconds spent writing)."""
    written, write_seconds = 0, 0.0
    if progress:
        progress(0, total)
    for batch in iter_latest_batches(offline, version, batch_size):
        start = time.perf_counter()
        written += online.write_many(version, batch)
        write_seconds += time.perf_counter() - start
        if progress:
            progress(written, max(total, written))
    return written, write_seconds


def iter_latest_batches(offline: OfflineStore, version: str, batch_size: int) -> Iterator[Batch]:
    """Batches of (entity_id, latest vector): streamed if the store can, else sliced from one read."""
    stream = getattr(offline, "iter_latest", None)
    if stream is not None:
        yield from stream(version, batch_size)
        return
    # Fallback for a store without `iter_latest`: holds every vector in memory at once.
    items = list(offline.latest_vectors(version).items())
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


# The two queries below belong in SqlOfflineStore (io layer); they live here until it grows
# `feature_set_versions()` / `count_entities()`, to keep this change out of a file being edited.


def _engine(offline: SqlOfflineStore) -> sa.Engine:
    # The store migrates lazily on first use; a raw query on a fresh database needs the tables first.
    offline.upgrade()
    return offline.engine


def feature_set_versions(offline: SqlOfflineStore) -> list[str]:
    """Registered feature-set versions, newest first."""
    query = sa.select(feature_sets.c.version).order_by(feature_sets.c.created_at.desc())
    with _engine(offline).connect() as conn:
        return [str(version) for version in conn.execute(query).scalars()]


def _resolve_version(offline: SqlOfflineStore, version: str | None) -> str:
    """The requested version if the offline store has it, else the newest; NotFound names the known ones."""
    known = feature_set_versions(offline)
    if not known:
        raise NotFound("the offline store has no feature sets: run `churnops pipeline run` first")
    if version is None:
        return known[0]
    if version not in known:
        raise NotFound(f"feature set {version!r} is not in the offline store (known: {', '.join(known)})")
    return version


def count_entities(offline: SqlOfflineStore, version: str) -> int:
    """Distinct entities with at least one row in `version` (the progress total)."""
    query = sa.select(sa.func.count(sa.distinct(feature_rows.c.entity_id))).where(
        feature_rows.c.feature_set_version == version
    )
    with _engine(offline).connect() as conn:
        return int(conn.execute(query).scalar_one())

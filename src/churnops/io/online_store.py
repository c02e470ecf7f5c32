"""Online feature store: each customer's latest raw feature vector, read on every prediction.

The embedded implementation is an in-process map filled at start-up from the
offline store; the Redis implementation (same interface) arrives with the
feature-store work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from churnops.io.offline_store import OfflineStore


class OnlineStore(Protocol):
    """Latest feature vector per entity for one feature-set version."""

    kind: str

    def get(self, entity_id: str) -> Mapping[str, Any] | None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class InMemoryOnlineStore:
    """A dict of vectors: lookups cost a dictionary access."""

    kind = "memory"

    def __init__(self, vectors: dict[str, dict[str, Any]]) -> None:
        self._vectors = vectors

    @classmethod
    def from_offline(cls, offline: OfflineStore, feature_set_version: str) -> InMemoryOnlineStore:
        """Load every entity's newest vector of one feature-set version."""
        return cls(offline.latest_vectors(feature_set_version))

    def get(self, entity_id: str) -> Mapping[str, Any] | None:
        return self._vectors.get(entity_id)

    def __len__(self) -> int:
        return len(self._vectors)

    def close(self) -> None:
        self._vectors = {}

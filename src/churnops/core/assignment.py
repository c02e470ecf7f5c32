"""Sticky traffic assignment: customer -> bucket -> arm, and the shadow draw, on the hot path.

A customer's bucket is `blake2b(salt, customer_id) mod 10,000` — a salted cryptographic hash, so
it is the same in every worker, replica, restart and Python version (never Python's `hash()`,
which is salted per process). The first 8 bytes of the 16-byte digest pick the bucket; the next
8 give an independent uniform draw in [0, 1) for shadow sampling.

Buckets map to arms through a 10,000-entry table. A first table lays arms out in contiguous
ranges, in definition order, sized by weight (largest-remainder rounding, ties to the earlier
arm). A weight change never re-lays the table: every arm keeps the buckets it had up to its new
quota, an arm that shrinks gives up its highest-numbered buckets, and arms that grow take the
freed buckets lowest first. So the share of customers who change arm is exactly the total
variation between the old and new weights (moving 5 points from control to one arm moves 5% of
buckets, whichever arms they are), the minimum any scheme can reach. The table therefore depends
on the history of weights, not only the latest: store it (`BucketTable.to_dict`, ~13 kB) with
every weight change, or rebuild it with `table_for_history` from the recorded weights.

Requests without a customer id are assigned by the hash of their canonical feature payload
(`payload_key`): a retried request gets the same arm and the ledger can replay the decision; two
customers with identical features share an arm, which biases nothing. A random arm was rejected
because a retry could land in another arm and it cannot be reproduced.

Shadows are sampled per customer, deterministically: a customer is shadowed by every shadow whose
`sample` exceeds the customer's draw. The same customers stay shadowed across requests, raising a
fraction only adds customers, and shadows with equal fractions score the same customers (paired
comparisons among shadows). The draw is independent of the bucket, hence of the served arm.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from churnops.core.experiments import ExperimentDefinition

BUCKETS = 10_000
_DRAW_SCALE = 2.0**-53


class Assignment(NamedTuple):
    """Where one request goes: the arm's name, the customer's bucket and shadow draw."""

    arm: str
    bucket: int
    draw: float


@dataclass(frozen=True)
class BucketTable:
    """Owner of each of the 10,000 buckets: `owners[b]` indexes `arms`."""

    arms: tuple[str, ...]
    owners: bytes

    def __post_init__(self) -> None:
        if len(self.owners) != BUCKETS:
            raise ValueError(f"a bucket table has {BUCKETS} entries, got {len(self.owners)}")
        if not 0 < len(self.arms) <= 255 or len(set(self.arms)) != len(self.arms):
            raise ValueError("a bucket table needs 1 to 255 distinct arm names")
        if max(self.owners) >= len(self.arms):
            raise ValueError("a bucket table names an arm index it does not have")

    def arm_of(self, bucket: int) -> str:
        """The arm that owns `bucket`."""
        return self.arms[self.owners[bucket]]

    def counts(self) -> dict[str, int]:
        """Buckets per arm (arms with none included as 0)."""
        return {arm: self.owners.count(i) for i, arm in enumerate(self.arms)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the experiment store."""
        return {"arms": list(self.arms), "owners": base64.b64encode(self.owners).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketTable:
        """Inverse of `to_dict`."""
        return cls(tuple(data["arms"]), base64.b64decode(data["owners"], validate=True))


def quotas(weights: Mapping[str, float]) -> dict[str, int]:
    """Buckets per arm for these weights: largest-remainder rounding to exactly 10,000.

    Exact rational arithmetic, so every process computes the same quotas.
    """
    exact = {arm: Fraction(w) for arm, w in weights.items()}
    if any(w < 0 for w in exact.values()) or sum(exact.values()) <= 0:
        raise ValueError("weights must be >= 0 and sum to a positive total")
    total = sum(exact.values())
    shares = {arm: w * BUCKETS / total for arm, w in exact.items()}
    floors = {arm: int(share) for arm, share in shares.items()}
    left = BUCKETS - sum(floors.values())
    by_remainder = sorted(shares, key=lambda arm: -(shares[arm] % 1))  # stable: ties keep arm order
    for arm in by_remainder[:left]:
        floors[arm] += 1
    return floors


def allocate(weights: Mapping[str, float], previous: BucketTable | None = None) -> BucketTable:
    """The bucket table for `weights` (arm order = mapping order), moving as few buckets as
    possible from `previous` (see the module docstring). Without `previous`: contiguous ranges."""
    quota = quotas(weights)
    arms = tuple(weights)
    held: dict[str, list[int]] = {arm: [] for arm in arms}
    free: list[int] = []
    if previous is None:
        free = list(range(BUCKETS))
    else:
        for bucket, owner in enumerate(previous.owners):
            name = previous.arms[owner]
            held.get(name, free).append(bucket)
    for arm in arms:
        surplus = held[arm][quota[arm] :]
        del held[arm][quota[arm] :]
        free.extend(surplus)
    free.sort()
    owners = bytearray(BUCKETS)
    for index, arm in enumerate(arms):
        need = quota[arm] - len(held[arm])
        held[arm].extend(free[:need])
        del free[:need]
        for bucket in held[arm]:
            owners[bucket] = index
    return BucketTable(arms, bytes(owners))


def table_for_history(history: Sequence[Mapping[str, float]]) -> BucketTable:
    """Replay an experiment's weight history (oldest first) into its current table."""
    if not history:
        raise ValueError("the weight history is empty")
    table: BucketTable | None = None
    for weights in history:
        table = allocate(weights, table)
    assert table is not None
    return table


def moved_fraction(old: BucketTable, new: BucketTable) -> float:
    """Share of buckets (hence, in expectation, of customers) whose arm differs between tables."""
    moved = sum(old.arms[a] != new.arms[b] for a, b in zip(old.owners, new.owners, strict=True))
    return moved / BUCKETS


def payload_key(features: Mapping[str, Any]) -> str:
    """Stable stand-in for a missing customer id: the canonical JSON of the feature payload."""
    return "features:" + json.dumps(features, sort_keys=True, separators=(",", ":"), default=str)


class Assigner:
    """The hot path: customer id -> (arm, bucket, shadow draw) in about a microsecond.

    Built once per experiment version (on start-up and on a change); immutable and thread-safe.
    """

    __slots__ = ("_arm_by_bucket", "_base", "_shadow_cuts", "_shadow_sets", "table")

    def __init__(self, salt: str, table: BucketTable, shadows: Sequence[tuple[str, float]] = ()) -> None:
        salt_bytes = salt.encode()
        # Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike.
        self._base = hashlib.blake2b(len(salt_bytes).to_bytes(4, "big") + salt_bytes, digest_size=16)
        self.table = table
        self._arm_by_bucket = tuple(table.arms[owner] for owner in table.owners)
        ranked = sorted(shadows, key=lambda s: -s[1])
        # k shadows fire when the draw is below the k largest fractions: store ascending cuts.
        self._shadow_cuts = [-sample for _, sample in ranked]
        self._shadow_sets = [tuple(name for name, _ in ranked[:k]) for k in range(len(ranked) + 1)]

    @classmethod
    def for_experiment(cls, definition: ExperimentDefinition, table: BucketTable | None = None) -> Assigner:
        """An assigner for a definition; pass its stored table once its weights have ever changed."""
        table = table if table is not None else allocate(definition.weights())
        if set(table.arms) != {a.name for a in definition.arms}:
            raise ValueError("the bucket table's arms differ from the experiment's")
        return cls(definition.effective_salt, table, [(s.name, s.sample) for s in definition.shadows])

    def assign(self, customer_id: str) -> Assignment:
        """The arm, bucket and shadow draw of one customer (use `payload_key` when there is no id)."""
        hasher = self._base.copy()
        hasher.update(customer_id.encode())
        digest = hasher.digest()
        bucket = int.from_bytes(digest[:8], "little") % BUCKETS
        draw = (int.from_bytes(digest[8:], "little") >> 11) * _DRAW_SCALE
        return Assignment(self._arm_by_bucket[bucket], bucket, draw)

    def shadows_for(self, draw: float) -> tuple[str, ...]:
        """Names of the shadows that score a request with this draw (largest fraction first)."""
        return self._shadow_sets[bisect.bisect_left(self._shadow_cuts, -draw)]

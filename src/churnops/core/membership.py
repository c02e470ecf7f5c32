"""Training-set membership: which customers a model version learned from, kept as keyed hashes.

Recorded at registration so the discrimination gate can compare a candidate with the champion on
rows *neither* trained on: the candidate's holdout less every customer in the champion's training
set. Each id becomes an 8-byte keyed BLAKE2b hash (the key is the ledger's pseudonym key), so the
stored set names nobody and cannot be checked against a guessed id without the key; a false match
between two different ids has probability n / 2^64 per lookup.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from churnops.errors import DataError

MAGIC = b"chmem1\n"
Keys = NDArray[np.uint64]


def member_keys(key: bytes, ids: Iterable[object]) -> Keys:
    """One keyed 64-bit hash per id (ids as text, as in the spec's id column)."""
    secret = hashlib.sha256(b"churnops membership\0" + key).digest()
    digests = b"".join(hashlib.blake2b(str(i).encode(), key=secret, digest_size=8).digest() for i in ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


@dataclass(frozen=True)
class Membership:
    """A sorted set of member hashes."""

    keys: Keys

    @classmethod
    def of(cls, key: bytes, ids: Iterable[object]) -> Membership:
        return cls(np.unique(member_keys(key, ids)))

    def __len__(self) -> int:
        return int(self.keys.size)

    def contains(self, key: bytes, ids: Iterable[object]) -> NDArray[np.bool_]:
        """True for each id in the set."""
        wanted = member_keys(key, ids)
        if self.keys.size == 0:
            return np.zeros(wanted.size, dtype=bool)
        at = np.searchsorted(self.keys, wanted).clip(max=self.keys.size - 1)
        found: NDArray[np.bool_] = self.keys[at] == wanted
        return found

    def to_bytes(self) -> bytes:
        return MAGIC + struct.pack("<Q", self.keys.size) + self.keys.astype("<u8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Membership:
        head = len(MAGIC) + 8
        if not data.startswith(MAGIC) or len(data) < head:
            raise DataError("training-set membership: not a churnops membership file")
        (count,) = struct.unpack("<Q", data[len(MAGIC) : head])
        if len(data) != head + 8 * count:
            raise DataError(
                f"training-set membership: {count} ids announced, {(len(data) - head) // 8} stored"
            )
        return cls(np.frombuffer(data[head:], dtype="<u8").astype(np.uint64))

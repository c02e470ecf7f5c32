"""The prediction ledger's domain: record ids, pseudonyms, canonical bytes and the hash chain.

Every answered prediction and every admin, privacy or lifecycle action is one ledger
record. Each writer process keeps its own chain: a record's hash covers its canonical
bytes and the previous record's hash, and signed checkpoints pin the chain's head, so
an edited, deleted, reordered or truncated record is found by `verify_chain`.

Customers appear only as keyed pseudonyms; feature vectors only as a keyed hash and,
encrypted, under the customer's own data key (`core/envelope.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

PREDICTION = "prediction"
EVENT = "event"
SERVED = "served"
SHADOW = "shadow"
GENESIS = "0" * 64
FORMAT = 1  # canonical-bytes version, part of every hash

# Stored columns in canonical order: the hash covers exactly these, in this order.
FIELDS: tuple[str, ...] = (
    "record_id",
    "writer_id",
    "seq",
    "kind",
    "at_us",
    "request_id",
    "subject",
    "principal",
    "model_name",
    "model_version",
    "variant",
    "experiment",
    "bucket",
    "role",
    "probability",
    "decision",
    "threshold",
    "reasons",
    "feature_source",
    "feature_hash",
    "key_epoch",
    "payload",
    "action",
    "details",
    "prev_hash",
    "record_hash",
)
_HASHED = FIELDS[:-2]  # prev_hash and record_hash are the chain itself


class RecordIds:
    """UUIDv7 strings: 48-bit milliseconds, then 42 random bits fixed per process and a 32-bit
    counter. Unique across processes and replicas without coordination, sortable by time, and
    about a microsecond each (no `uuid` object, no syscall for randomness per id)."""

    def __init__(self) -> None:
        self._node = secrets.randbits(42)
        self._counter = itertools.count(secrets.randbits(20))

    def next(self, now_ns: int | None = None) -> str:
        ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
        tail = (self._node << 32) | (next(self._counter) & 0xFFFFFFFF)  # 74 bits
        rand_a, rand_b = tail >> 62, tail & ((1 << 62) - 1)
        value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def record_time_ms(record_id: str) -> int:
    """The millisecond timestamp inside a UUIDv7 record id."""
    return int(record_id[:8] + record_id[9:13], 16)


def pseudonym(key: bytes, customer_id: str) -> str:
    """A customer's keyed pseudonym (HMAC-SHA256, 128 bits as hex): stable, not reversible."""
    return hmac.digest(key, customer_id.encode(), "sha256")[:16].hex()


def feature_bytes(record: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a feature vector (sorted keys): what is hashed and encrypted."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def feature_hash(key: bytes, canonical_features: bytes) -> str:
    """Keyed hash of a feature vector (BLAKE2b in its keyed MAC mode): equal vectors match, but a
    guessed vector cannot be confirmed without the key."""
    return hashlib.blake2b(canonical_features, key=key[:64], digest_size=32).hexdigest()


def payload_digest(payload: bytes | None) -> str | None:
    """Hash of the encrypted payload (the chain covers the ciphertext, so crypto-shredding the key
    leaves every hash intact)."""
    return None if payload is None else hashlib.sha256(payload).hexdigest()


_PAYLOAD = FIELDS.index("payload")
WRITER, SEQ, PREV, HASH = FIELDS.index("writer_id"), FIELDS.index("seq"), len(FIELDS) - 2, len(FIELDS) - 1


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every stored field but the chain's own, in FIELDS order."""
    return canonical_values([row.get(name) for name in _HASHED])


def canonical_values(values: Sequence[Any]) -> bytes:
    """`canonical` for a record given as values in FIELDS order (the writer's form)."""
    hashed = list(values[: len(_HASHED)])
    hashed[_PAYLOAD] = payload_digest(hashed[_PAYLOAD])
    return orjson.dumps([FORMAT, *hashed])


def chain_hash(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical_bytes).hexdigest()


class Chain:
    """One writer's chain: hands out sequence numbers and links each record to the previous one."""

    def __init__(self, writer_id: str, seq: int = 0, head: str = GENESIS) -> None:
        self.writer_id = writer_id
        self.seq = seq
        self.head = head

    def link(self, row: dict[str, Any]) -> dict[str, Any]:
        """Stamp a record given as a mapping with writer, seq and the chain hashes (in place)."""
        values = [row.get(name) for name in FIELDS]
        self.link_values(values)
        row.update(zip(FIELDS, values, strict=True))
        return row

    def link_values(self, values: list[Any]) -> list[Any]:
        """Stamp a record given as values in FIELDS order (in place) and advance the head."""
        self.seq += 1
        values[WRITER], values[SEQ], values[PREV] = self.writer_id, self.seq, self.head
        values[HASH] = self.head = chain_hash(self.head, canonical_values(values))
        return values


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that `writer_id`'s chain had `seq` records ending in `head` at `at_us`."""

    writer_id: str
    seq: int
    head: str
    at_us: int
    signature: str

    def as_row(self) -> dict[str, Any]:
        return {
            "writer_id": self.writer_id,
            "seq": self.seq,
            "head": self.head,
            "at_us": self.at_us,
            "signature": self.signature,
        }


def _checkpoint_message(writer_id: str, seq: int, head: str, at_us: int) -> bytes:
    return orjson.dumps([FORMAT, "checkpoint", writer_id, seq, head, at_us])


def sign_checkpoint(key: bytes, writer_id: str, seq: int, head: str, at_us: int) -> Checkpoint:
    signature = hmac.digest(key, _checkpoint_message(writer_id, seq, head, at_us), "sha256").hex()
    return Checkpoint(writer_id, seq, head, at_us, signature)


def checkpoint_valid(key: bytes, checkpoint: Mapping[str, Any]) -> bool:
    expected = sign_checkpoint(
        key, checkpoint["writer_id"], checkpoint["seq"], checkpoint["head"], checkpoint["at_us"]
    )
    return hmac.compare_digest(expected.signature, str(checkpoint["signature"]))


@dataclass(frozen=True)
class ChainProblem:
    """The first thing wrong with a writer's chain, naming the record."""

    writer_id: str
    seq: int
    record_id: str | None
    problem: str

    def __str__(self) -> str:
        where = f"record {self.record_id} (writer {self.writer_id}, seq {self.seq})"
        if self.record_id is None:
            where = f"writer {self.writer_id} at seq {self.seq}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class ChainReport:
    """What verification saw of one writer's chain."""

    writer_id: str
    records: int
    checkpoints: int
    head_seq: int
    problem: ChainProblem | None


def verify_chain(
    writer_id: str,
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    checkpoint_key: bytes,
) -> ChainReport:
    """Check one writer's records (in seq order) and checkpoints; stop at the first problem.

    Finds an edited record (its hash no longer matches its bytes), a deleted one (a gap in
    seq), a reordered pair (a broken link), a forged checkpoint (bad signature) and a tail
    truncated after a checkpoint (the checkpoint names a seq or head the chain lacks). A
    tail cut after the newest checkpoint is invisible by construction: checkpoints come at
    least every 10 s, which bounds what can go unnoticed.
    """
    by_seq = {int(c["seq"]): c for c in checkpoints}
    for checkpoint in checkpoints:
        if not checkpoint_valid(checkpoint_key, checkpoint):
            return _report(
                writer_id, 0, checkpoints, 0, None, int(checkpoint["seq"]), "checkpoint signature invalid"
            )
    head, seq, count = GENESIS, 0, 0
    for row in rows:
        count += 1
        seq += 1
        record_id = str(row["record_id"])
        if int(row["seq"]) != seq:
            problem = f"expected seq {seq}, found {row['seq']}: a record before it was deleted or moved"
            return _report(writer_id, count, checkpoints, seq - 1, record_id, int(row["seq"]), problem)
        if row["prev_hash"] != head:
            problem = "prev_hash does not match the record before it: records were reordered or replaced"
            return _report(writer_id, count, checkpoints, seq - 1, record_id, seq, problem)
        computed = chain_hash(head, canonical(row))
        if computed != row["record_hash"]:
            problem = "record_hash does not match its contents: the record was edited"
            return _report(writer_id, count, checkpoints, seq - 1, record_id, seq, problem)
        head = computed
        pinned = by_seq.get(seq)
        if pinned is not None and pinned["head"] != head:
            return _report(writer_id, count, checkpoints, seq, record_id, seq, "checkpoint head differs")
    newest = max(by_seq, default=0)
    if newest > seq:
        problem = f"checkpoint covers seq {newest} but the chain ends at seq {seq}: the tail was truncated"
        return _report(writer_id, count, checkpoints, seq, None, seq + 1, problem)
    return ChainReport(writer_id, count, len(checkpoints), seq, None)


def _report(
    writer_id: str,
    count: int,
    checkpoints: Sequence[Mapping[str, Any]],
    head_seq: int,
    record_id: str | None,
    seq: int,
    problem: str,
) -> ChainReport:
    found = ChainProblem(writer_id, seq, record_id, problem)
    return ChainReport(writer_id, count, len(checkpoints), head_seq, found)


def key_epoch(at_us: int, epoch_days: int) -> int:
    """Which data-key period a record falls in: erasure destroys all of a customer's keys,
    retention destroys whole periods that are past it."""
    return at_us // (epoch_days * 86_400_000_000)

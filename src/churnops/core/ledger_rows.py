"""Turn what a request answered into a stored ledger record: pseudonym, sealed vector, chain link.

The hot path only builds a `Prediction` tuple; everything costly (the pseudonym's HMAC,
canonical JSON, the keyed feature hash, AES-GCM, the chain's SHA-256) runs here in the
background writer. Each writer process wraps data keys of its own for each customer and
key period, so it never reads a key from the database on the write path and keeps
working while the database is down (the wrapped keys travel with the records, into the
database or the spool).

A customer's vector is sealed once per data key and reused while the hot path hands over the
same vector object (the stores replace a customer's vector, never edit it in place): the same
plaintext under the same key, nonce and associated data is the same ciphertext, so a repeated
payload reveals only that the vectors are equal, which the keyed feature hash already says.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from churnops.core import envelope
from churnops.core.ledger import EVENT, FIELDS, FORMAT, PREDICTION, Chain, pseudonym

_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS  # as `ledger.feature_bytes`
_sha256 = hashlib.sha256
_NONCE_BYTES = envelope.NONCE_BYTES


class Prediction(NamedTuple):
    """One answered prediction as the hot path hands it over (no copies, no encoding)."""

    prediction_id: str
    at_us: int
    request_id: str
    customer_id: str
    principal: str | None
    model_name: str
    model_version: str
    variant: str
    experiment: str | None
    bucket: int | None
    role: str
    probability: float
    decision: bool
    threshold: float
    reasons: Sequence[tuple[str, float]]
    feature_source: str
    features: Mapping[str, Any]


class SealedVector(NamedTuple):
    """One customer's vector as sealed under their data key of one period (reused while unchanged)."""

    vector: Mapping[str, Any]  # the object the hot path handed over: identity marks it unchanged
    epoch: int
    subject: str
    payload: bytes
    payload_digest: str
    feature_hash: str


class Sealer:
    """Pseudonymises, seals and chains records for one writer."""

    def __init__(
        self,
        chain: Chain,
        pseudonym_key: bytes,
        feature_key: bytes,
        wrapping_key: bytes,
        epoch_days: int,
        cache_max: int = 200_000,
        sealed_max: int = 20_000,
    ) -> None:
        self.chain = chain
        self.pseudonym_key = pseudonym_key
        self.feature_key = feature_key
        self.wrapping_key = wrapping_key
        self.epoch_days = epoch_days
        self._epoch_us = epoch_days * 86_400_000_000  # `key_epoch`, inlined on the hot path
        self._feature_hasher = hashlib.blake2b(key=feature_key[:64], digest_size=32)  # `feature_hash`
        self.cache_max = cache_max
        self.sealed_max = sealed_max
        self._subjects: dict[str, str] = {}  # customer id -> pseudonym
        # Most predictions score a stored vector, the same object until the store replaces it.
        self._sealed: dict[str, SealedVector] = {}  # customer id -> its vector as last sealed
        self.vectors_sealed = 0  # vectors encrypted afresh (records sealed minus reuses)
        # (pseudonym, epoch) -> this writer's data key. Never evicted within a period: a key made
        # twice for one (customer, period, writer) would clash with the stored one. Periods older
        # than the previous one are dropped as time moves on.
        self._keys: dict[tuple[str, int], tuple[AESGCM, bytes]] = {}
        self._epoch = -1
        self._new_keys: list[dict[str, Any]] = []
        # Every data key belongs to this writer alone, so a counter is a nonce that never repeats
        # under any of its keys (and saves a getrandom syscall per record).
        self._nonces = itertools.count(1)

    def subject(self, customer_id: str) -> str:
        found = self._subjects.get(customer_id)
        if found is None:
            if len(self._subjects) >= self.cache_max:
                self._subjects.clear()
            found = self._subjects[customer_id] = pseudonym(self.pseudonym_key, customer_id)
        return found

    def prediction_row(self, p: Prediction) -> list[Any]:
        """Seal and chain one prediction: the same bytes as `Chain.link_values` over the record's
        values, written out in one function because it runs once per prediction on the serving core
        (each call and lookup saved here is a measurable share of the ledger's cost)."""
        epoch = p.at_us // self._epoch_us
        sealed = self._sealed.get(p.customer_id)
        if sealed is None or sealed.vector is not p.features or sealed.epoch != epoch:
            sealed = self._seal_vector(p.customer_id, p.features, epoch)
        _, _, subject, payload, payload_digest, feature_hash = sealed  # unpacked: no attribute lookups
        reasons = _dumps(p.reasons).decode()
        chain = self.chain
        seq, prev = chain.seq + 1, chain.head  # the chain moves only once the record is whole
        canonical = _dumps([
            FORMAT, p.prediction_id, chain.writer_id, seq, PREDICTION, p.at_us, p.request_id, subject,
            p.principal, p.model_name, p.model_version, p.variant, p.experiment, p.bucket, p.role,
            p.probability, p.decision, p.threshold, reasons, p.feature_source, feature_hash, epoch,
            payload_digest, None, None,
        ])  # fmt: skip
        record_hash = _sha256(prev.encode() + b"\n" + canonical).hexdigest()
        chain.seq, chain.head = seq, record_hash
        return [
            p.prediction_id, chain.writer_id, seq, PREDICTION, p.at_us, p.request_id, subject, p.principal,
            p.model_name, p.model_version, p.variant, p.experiment, p.bucket, p.role,
            p.probability, p.decision, p.threshold, reasons, p.feature_source,
            feature_hash, epoch, payload, None, None, prev, record_hash,
        ]  # fmt: skip

    def _seal_vector(self, customer_id: str, features: Mapping[str, Any], epoch: int) -> SealedVector:
        """Encrypt and hash one vector under the customer's key of the period, and keep the result."""
        subject = self.subject(customer_id)
        vector = _dumps(features, option=_SORTED)
        aead, aad = self._data_key(subject, epoch)
        payload = envelope.seal(aead, vector, aad, next(self._nonces).to_bytes(_NONCE_BYTES, "big"))
        # `feature_hash` from a copy of the keyed state: requests that carry their own features
        # come here every time, and the copy skips the keyed init's extra compression.
        keyed = self._feature_hasher.copy()
        keyed.update(vector)
        self.vectors_sealed += 1
        if len(self._sealed) >= self.sealed_max:
            self._sealed.clear()
        digest = _sha256(payload).hexdigest()  # `ledger.payload_digest`, never None here
        sealed = SealedVector(features, epoch, subject, payload, digest, keyed.hexdigest())
        self._sealed[customer_id] = sealed
        return sealed

    def event_row(
        self,
        record_id: str,
        action: str,
        details: Mapping[str, Any],
        principal: str | None,
        subject: str | None = None,
        request_id: str | None = None,
        at_us: int | None = None,
    ) -> list[Any]:
        """An admin, privacy or lifecycle action; `details` must hold no clear id or PII."""
        values: list[Any] = [None] * len(FIELDS)
        values[0], values[3], values[4] = record_id, EVENT, at_us or time.time_ns() // 1000
        values[FIELDS.index("request_id")] = request_id
        values[FIELDS.index("subject")] = subject
        values[FIELDS.index("principal")] = principal
        values[FIELDS.index("action")] = action
        values[FIELDS.index("details")] = orjson.dumps(dict(details), option=orjson.OPT_SORT_KEYS).decode()
        return self.chain.link_values(values)

    def take_new_keys(self) -> list[dict[str, Any]]:
        """Wrapped data keys made since the last call (stored with the batch that uses them)."""
        keys, self._new_keys = self._new_keys, []
        return keys

    def forget(self, subject: str) -> None:
        """Erasure: drop every cached key, id and sealed vector of this customer."""
        # list(dict) is one C-level copy: safe while the writer thread adds entries.
        for key in [k for k in list(self._keys) if k[0] == subject]:
            self._keys.pop(key, None)
        for customer, known in list(self._subjects.items()):
            if known == subject:
                self._subjects.pop(customer, None)
        for customer, sealed in list(self._sealed.items()):
            if sealed.subject == subject:
                self._sealed.pop(customer, None)

    def forget_epochs_before(self, epoch: int) -> None:
        """Retention: stop using keys of periods that were shredded."""
        for key in [k for k in list(self._keys) if k[1] < epoch]:
            self._keys.pop(key, None)
        self._sealed.clear()  # payloads under the dropped keys must not be reused

    def _data_key(self, subject: str, epoch: int) -> tuple[AESGCM, bytes]:
        """This writer's key for (customer, period) and the associated data its payloads carry."""
        found = self._keys.get((subject, epoch))
        if found is None:
            aad = envelope.associated_data(subject, epoch)
            if epoch > self._epoch:
                self._epoch = epoch
                self.forget_epochs_before(epoch - 1)
            raw = envelope.new_data_key()
            self._new_keys.append(
                {
                    "subject": subject,
                    "epoch": epoch,
                    "writer_id": self.chain.writer_id,
                    "wrapped": envelope.wrap_key(self.wrapping_key, raw, aad),
                    "created_at_us": time.time_ns() // 1000,
                }
            )
            found = self._keys[(subject, epoch)] = (AESGCM(raw), aad)
        return found

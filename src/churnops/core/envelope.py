"""Envelope encryption for ledger payloads: one data key per customer and period, wrapped by a master key.

Destroying a customer's data keys (erasure) or a past period's keys (retention) makes the
payloads unreadable without touching the append-only records: crypto-shredding. AES-256-GCM
with a random 96-bit nonce per message; the associated data binds each ciphertext to its
customer pseudonym and period, so a payload copied onto another record does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
KEY_BYTES = 32


class Unreadable(Exception):
    """A ciphertext whose key is gone or that does not belong where it was found."""


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 256-bit subkey of `master` for one purpose (HKDF-style expand with HMAC-SHA256)."""
    return hmac.digest(master, b"churnops/" + purpose.encode() + b"\x01", "sha256")


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def associated_data(subject: str, epoch: int) -> bytes:
    return f"{subject}/{epoch}".encode()


def seal(aead: AESGCM, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    """Encrypt; a random nonce unless the caller owns a counter that never repeats under this key."""
    nonce = nonce or os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    try:
        return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag as err:
        raise Unreadable("ciphertext does not verify under this key") from err


def wrap_key(wrapping_key: bytes, data_key: bytes, aad: bytes) -> bytes:
    """A data key encrypted under the wrapping key (what the key table stores)."""
    return seal(AESGCM(wrapping_key), data_key, aad)


def unwrap_key(wrapping_key: bytes, wrapped: bytes, aad: bytes) -> bytes:
    return open_sealed(AESGCM(wrapping_key), wrapped, aad)


def fingerprint(key: bytes) -> str:
    """A short non-secret identifier of a key (to tell configured keys apart in logs)."""
    return hashlib.sha256(b"fingerprint" + key).hexdigest()[:12]

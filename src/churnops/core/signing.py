"""HMAC request signing: the canonical string, the `X-Signature` header, the timestamp window.

    X-Signature: t=<unix seconds>,n=<nonce>,v1=<hex HMAC-SHA256(signing secret, canonical)>
    canonical  = v1\\n{t}\\n{n}\\n{METHOD}\\n{path}\\n{sorted query}\\n{hex sha256(raw body)}

The path is the decoded request path; the query is re-encoded from its decoded pairs, sorted,
so clients and server agree however a library escaped it. The body hash is over the raw
bytes before any JSON parsing. A timestamp more than `WINDOW_SECONDS` away from the server's
clock is refused; each nonce is accepted once (the service remembers nonces for twice the
window, so a replay is refused for as long as its timestamp could pass).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import parse_qsl, urlencode

from churnops.core.auth import BASE62

WINDOW_SECONDS = 300
NONCE_TTL_SECONDS = 2 * WINDOW_SECONDS
SIGNING_PREFIX = "chs_"
_HEADER = re.compile(r"^t=(\d{1,12}),n=([A-Za-z0-9_-]{16,64}),v1=([0-9a-f]{64})$")


class BadSignature(ValueError):
    """The X-Signature header is missing, malformed, stale or does not verify."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # label of auth_failures_total


def new_signing_secret() -> str:
    return SIGNING_PREFIX + "".join(secrets.choice(BASE62) for _ in range(43))


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def canonical_query(query: str) -> str:
    """Decoded pairs, sorted, re-encoded with %20 for spaces (never '+')."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return urlencode(pairs, safe="-_.~")


def canonical_string(timestamp: int, nonce: str, method: str, path: str, query: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"v1\n{timestamp}\n{nonce}\n{method.upper()}\n{path}\n{canonical_query(query)}\n{digest}".encode()


def signature(secret: str, canonical: bytes) -> str:
    return hmac.digest(secret.encode(), canonical, "sha256").hex()


def signature_header(secret: str, timestamp: int, nonce: str, canonical: bytes) -> str:
    return f"t={timestamp},n={nonce},v1={signature(secret, canonical)}"


def parse_header(value: str | None) -> tuple[int, str, str]:
    """(timestamp, nonce, hex signature) of an X-Signature value; BadSignature otherwise."""
    if value is None:
        raise BadSignature("this key signs its requests: send X-Signature: t=...,n=...,v1=...", "unsigned")
    match = _HEADER.fullmatch(value)
    if match is None:
        raise BadSignature(
            "malformed X-Signature: expected t=<unix seconds>,n=<16-64 url-safe chars>,v1=<64 hex>",
            "bad_signature",
        )
    return int(match.group(1)), match.group(2), match.group(3)


def check_timestamp(timestamp: int, now: float, window: int = WINDOW_SECONDS) -> None:
    if abs(now - timestamp) > window:
        raise BadSignature(
            f"X-Signature timestamp is {now - timestamp:+.0f} s from the server clock (window ±{window} s)",
            "stale_timestamp",
        )


def verify(secret: str, canonical: bytes, presented: str) -> None:
    if not hmac.compare_digest(signature(secret, canonical), presented):
        raise BadSignature("X-Signature does not match the request", "bad_signature")

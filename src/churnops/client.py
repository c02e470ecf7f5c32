"""A small client helper: the headers of an API-key request, signed when the key requires it.

    import httpx
    from churnops.client import sign_request

    body = b'{"customer_id": "C0000042"}'
    headers = sign_request("POST", "http://localhost:8000/v1/predict", body, KEY, SIGNING_SECRET)
    httpx.post("http://localhost:8000/v1/predict", content=body,
               headers={"content-type": "application/json", **headers})

Each call makes a fresh nonce: a signed request can be sent once.
"""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

from churnops.core import signing


def sign_request(
    method: str,
    url: str,
    body: bytes,
    key: str,
    signing_secret: str | None = None,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """`X-API-Key`, plus `X-Signature` over the canonical string when a signing secret is given."""
    headers = {"X-API-Key": key}
    if signing_secret is None:
        return headers
    parts = urlsplit(url)
    timestamp = int(time.time() if now is None else now)
    nonce = nonce or signing.new_nonce()
    canonical = signing.canonical_string(
        timestamp, nonce, method, unquote(parts.path or "/"), parts.query, body
    )
    headers["X-Signature"] = signing.signature_header(signing_secret, timestamp, nonce, canonical)
    return headers

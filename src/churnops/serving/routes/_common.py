"""What the routers share: documented error responses, the request id, raw-body schemas."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from churnops.serving.dto import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed JSON",
        404: "Unknown customer with no request features",
        413: "Body over its limit or too many instances",
        422: "A field breaks a rule (the message and `field` name it)",
        503: "No verified model loaded",
    }.items()
}

# Every route behind access control can answer these (serving.auth's layers).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        401: "No, malformed, unknown, revoked or expired credentials (see WWW-Authenticate)",
        403: "The credentials lack the route's scope",
        429: "The key's rate limit is spent (Retry-After, RateLimit, RateLimit-Policy)",
    }.items()
}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))

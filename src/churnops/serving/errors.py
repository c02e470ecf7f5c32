"""The one place where exceptions become HTTP statuses and `{"error": {...}}` bodies."""

from __future__ import annotations

import logging

import orjson

from churnops.errors import (
    AuditUnavailable,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RateLimited,
    RegistryError,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger(__name__)


def error_body(status: int, code: str, message: str, request_id: str, field: str | None = None) -> bytes:
    error: dict[str, str] = {"code": code, "message": message, "request_id": request_id}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"error": error})


def classify(err: BaseException) -> tuple[int, str, str, str | None]:
    """(status, code, message, field) for an exception; unexpected ones never leak details."""
    if isinstance(err, InvalidRequest):
        return (
            (400, "malformed_request", str(err), None)
            if err.malformed
            else (
                422,
                "validation_error",
                str(err),
                err.field,
            )
        )
    if isinstance(err, PayloadTooLarge):
        return 413, "payload_too_large", str(err), None
    if isinstance(err, NotFound):
        return 404, "not_found", str(err), None
    if isinstance(err, NotReady | RegistryError):
        return 503, "not_ready", str(err), None
    if isinstance(err, AuditUnavailable):
        return 503, "audit_unavailable", str(err), None
    if isinstance(err, Conflict):
        return 409, "conflict", str(err), None
    if isinstance(err, Unauthenticated):
        return 401, "unauthenticated", str(err), None
    if isinstance(err, Forbidden):
        return 403, "forbidden", str(err), None
    if isinstance(err, RateLimited):
        return 429, "rate_limited", str(err), None
    if isinstance(err, Unavailable):
        return 503, "unavailable", str(err), None
    # Any other ChurnopsError is a server-side condition nobody mapped yet: a 500 that says so,
    # never a 400 that blames the client by accident.
    return 500, "internal_error", "internal error: the server log has the details under this request id", None


def error_headers(err: BaseException) -> list[tuple[bytes, bytes]]:
    """Headers a status needs besides the body: WWW-Authenticate on 401, Retry-After and RateLimit on 429."""
    if isinstance(err, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="churnops", ApiKey realm="churnops"')]
    if isinstance(err, RateLimited):
        return err.headers
    return []


def error_response(err: BaseException, request_id: str) -> tuple[int, bytes]:
    status, code, message, field = classify(err)
    if status >= 500 and status != 503:
        logger.error("request %s failed", request_id, exc_info=err)
    return status, error_body(status, code, message, request_id, field)

"""The one place where exceptions become HTTP statuses and `{"error": {...}}` bodies."""

from __future__ import annotations

import logging

import orjson

from churnops.errors import (
    AuditUnavailable,
    ChurnopsError,
    Conflict,
    InvalidRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RegistryError,
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
    if isinstance(err, ChurnopsError):
        return 400, "bad_request", str(err), None
    return 500, "internal_error", "internal error: the server log has the details under this request id", None


def error_response(err: BaseException, request_id: str) -> tuple[int, bytes]:
    status, code, message, field = classify(err)
    if status >= 500 and not isinstance(err, ChurnopsError):
        logger.error("request %s failed", request_id, exc_info=err)
    return status, error_body(status, code, message, request_id, field)

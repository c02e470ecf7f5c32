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


def body_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))

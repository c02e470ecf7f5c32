"""Routers: predictions (documented here, answered by the fast ASGI path), models, health, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from churnops.errors import NotReady
from churnops.io.registry import CHALLENGER
from churnops.serving.deps import StateDep
from churnops.serving.dto import (
    BatchRequestModel,
    BatchResponseModel,
    ErrorResponse,
    ModelsResponse,
    PredictRequestModel,
    PredictResponseModel,
)
from churnops.serving.metrics import CONTENT_TYPE
from churnops.serving.predict_api import handle_batch, handle_predict

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed JSON",
        404: "Unknown customer with no request features",
        413: "Body over its limit or too many instances",
        422: "A field breaks a rule (the message and `field` name it)",
        503: "No verified model loaded",
    }.items()
}


def _body_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))


@router.post(
    "/v1/predict",
    response_model=PredictResponseModel,
    responses=_ERRORS,
    openapi_extra=_body_schema(PredictRequestModel),
    tags=["predictions"],
)
async def predict(request: Request, state: StateDep) -> Response:
    """Churn probability, decision and top-3 reason codes for one customer."""
    status, body = await handle_predict(state, await request.body(), _request_id(request))
    return Response(body, status, media_type="application/json")


@router.post(
    "/v1/predict/batch",
    response_model=BatchResponseModel,
    responses=_ERRORS,
    openapi_extra=_body_schema(BatchRequestModel),
    tags=["predictions"],
)
async def predict_batch(request: Request, state: StateDep) -> Response:
    """Up to 10,000 predictions in one call, all on the same model version."""
    status, body = await handle_batch(state, await request.body(), _request_id(request))
    return Response(body, status, media_type="application/json")


@router.get("/v1/models", response_model=ModelsResponse, tags=["models"])
async def models(state: StateDep) -> dict[str, Any]:
    """Champion, challenger, variants and the live serving slots."""
    champion = state.slots.champion
    challenger = state.slots.get(CHALLENGER)
    return {
        "model_name": state.model_name,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
        "variants": list(state.settings.variants),
        "slots": [slot.describe() for slot in state.slots.all()],
        "online_store": {
            "kind": state.features.kind,
            "feature_set_version": state.feature_set_version,
            **state.features.stats(),
        },
    }


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "live"}


@router.get("/health/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
async def ready(state: StateDep) -> dict[str, Any]:
    """Ready when the champion is loaded and answers its golden requests."""
    if not state.ready:
        raise NotReady("the service is still starting")
    checked = state.champion().check_golden()
    return {"status": "ready", "model_version": state.champion().version, "golden_requests": checked}


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format, summed over every worker."""
    state.refresh_gauges()
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)

"""Predictions: documented here, answered by the fast ASGI path (both call the same handlers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from churnops.core.auth import PREDICT
from churnops.serving.asgi import principal_id
from churnops.serving.deps import StateDep
from churnops.serving.dto import BatchResponseModel, PredictResponseModel
from churnops.serving.openapi import request_body
from churnops.serving.predict_api import handle_batch, handle_predict
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS, request_id
from churnops.serving.scopes import requires

router = APIRouter(tags=["predictions"], dependencies=[requires(PREDICT)], responses=AUTH_ERRORS)


@router.post(
    "/v1/predict",
    response_model=PredictResponseModel,
    responses=ERRORS,
    openapi_extra=request_body("PredictRequest"),
)
async def predict(request: Request, state: StateDep) -> Response:
    """Churn probability, decision and top-3 reason codes for one customer."""
    status, body = await handle_predict(
        state, await request.body(), request_id(request), principal_id(request.scope)
    )
    return Response(body, status, media_type="application/json")


@router.post(
    "/v1/predict/batch",
    response_model=BatchResponseModel,
    responses=ERRORS,
    openapi_extra=request_body("BatchRequest"),
)
async def predict_batch(request: Request, state: StateDep) -> Response:
    """Up to 10,000 predictions in one call, all on the same model version."""
    status, body = await handle_batch(
        state, await request.body(), request_id(request), principal_id(request.scope)
    )
    return Response(body, status, media_type="application/json")

"""Delayed labels: joined to the predictions they judge (by id, or by customer in the label window)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from churnops.core.auth import PREDICT
from churnops.jobs.feedback import Label, record_labels, record_one
from churnops.jobs.feedback import parse_time_us as _time_us
from churnops.serving.asgi import principal_id
from churnops.serving.deps import StateDep
from churnops.serving.dto import ErrorResponse, FeedbackBatchRequest, FeedbackRequest, FeedbackResponse
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import requires

# 400: a body that is not JSON at all (FastAPI's parser says so before any field is read)
router = APIRouter(
    tags=["feedback"], dependencies=[requires(PREDICT)], responses={**AUTH_ERRORS, 400: ERRORS[400]}
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorResponse,
        "description": "No such prediction (or none of the customer in the window)",
    },
    409: {"model": ErrorResponse, "description": "The prediction already has the other label"},
    422: ERRORS[422],
    503: ERRORS[503],
}


def _label(body: FeedbackRequest) -> Label:
    observed = _time_us(body.observed_at.isoformat()) if body.observed_at is not None else None
    return Label(body.churned, body.prediction_id, body.customer_id, observed)


@router.post("/v1/feedback", response_model=FeedbackResponse, responses=_RESPONSES)
async def feedback(body: FeedbackRequest, request: Request, state: StateDep) -> dict[str, Any]:
    """One delayed label; the same label twice is one label."""
    store, keys = state.feedback_store(), state.require_keys()
    principal = principal_id(request.scope)
    summary = await asyncio.to_thread(
        record_one, store, keys, _label(body), principal, state.label_window_days
    )
    return summary.as_dict()


@router.post("/v1/feedback/batch", response_model=FeedbackResponse, responses=_RESPONSES)
async def feedback_batch(body: FeedbackBatchRequest, request: Request, state: StateDep) -> dict[str, Any]:
    """Up to 10,000 labels; answers how many joined, were duplicates, conflicted or matched nothing."""
    store, keys = state.feedback_store(), state.require_keys()
    labels = [_label(item) for item in body.labels]
    summary = await asyncio.to_thread(
        lambda: record_labels(
            store,
            keys,
            labels,
            window_days=state.label_window_days,
            source="api",
            principal=principal_id(request.scope),
        )
    )
    return summary.as_dict()

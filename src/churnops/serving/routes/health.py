"""Probes and Prometheus metrics (open routes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from churnops.errors import NotFound, NotReady
from churnops.serving.deps import StateDep
from churnops.serving.dto import ErrorResponse
from churnops.serving.metrics import CONTENT_TYPE
from churnops.serving.scopes import public

router = APIRouter(tags=["health"], dependencies=[public()])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "live"}


@router.get("/health/ready", responses={503: {"model": ErrorResponse}})
async def ready(state: StateDep) -> dict[str, Any]:
    """Ready when the champion is loaded and answers its golden requests."""
    problems = state.problems()
    if problems:
        raise NotReady("; ".join(problems))
    checked = state.champion().check_golden()
    return {"status": "ready", "model_version": state.champion().version, "golden_requests": checked}


@router.get("/metrics", response_class=Response, responses={404: {"model": ErrorResponse}})
async def metrics(state: StateDep) -> Response:
    """Prometheus text format, summed over every worker (404 when CHURNOPS_METRICS_PORT moves it)."""
    if state.settings.metrics_port is not None:
        raise NotFound(f"metrics are served on port {state.settings.metrics_port} (CHURNOPS_METRICS_PORT)")
    state.refresh_gauges()
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)

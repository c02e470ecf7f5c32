"""Monitoring: drift, performance and cost windows per variant (predict scope)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from churnops.jobs import monitor
from churnops.serving.deps import StateDep
from churnops.serving.monitoring import context_of
from churnops.serving.routes._common import ERRORS

router = APIRouter(tags=["monitoring"])

Window = Annotated[
    str | None,
    Query(max_length=32, description="A duration (30s, 15m, 1h, 1d, 2w) or a number of predictions (5000)."),
]
Name = Annotated[str | None, Query(max_length=64)]
_RESPONSES: dict[int | str, dict[str, Any]] = {422: ERRORS[422], 503: ERRORS[503]}


@router.get("/v1/monitoring/drift", responses=_RESPONSES)
async def drift(
    state: StateDep, window: Window = None, variant: Name = None, metric: Name = None
) -> dict[str, Any]:
    """Per-feature PSI and Jensen-Shannon, unseen and missing shares, prediction drift, per variant."""
    parsed = monitor.window_of("drift", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.drift(context.stores.monitor, context.params, parsed, variant=variant, metric=metric)

    return await asyncio.to_thread(run)


@router.get("/v1/monitoring/performance", responses=_RESPONSES)
async def performance(
    state: StateDep, window: Window = None, metric: Name = None, kind: Name = None
) -> dict[str, Any]:
    """Realised performance per cohort (confidence intervals, label coverage); the estimate before labels."""
    parsed = monitor.window_of("performance", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.performance(context.stores.feedback, context.params, parsed, metric=metric, kind=kind)

    return await asyncio.to_thread(run)


@router.get("/v1/monitoring/cost", responses=_RESPONSES)
async def cost(state: StateDep, window: Window = None) -> dict[str, Any]:
    """Measured cost per 1,000 predictions per variant and its anomaly judgement (status not_configured
    without a price table)."""
    parsed = monitor.window_of("cost", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.cost(context.stores.monitor, context.params, parsed)

    return await asyncio.to_thread(run)

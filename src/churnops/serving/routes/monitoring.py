"""Monitoring: drift, performance and cost windows per variant (predict scope)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query

from churnops.core.auth import PREDICT
from churnops.core.performance import KINDS, REALISED_METRICS
from churnops.errors import InvalidRequest
from churnops.jobs import monitor
from churnops.serving.deps import StateDep
from churnops.serving.monitoring import context_of
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import requires

router = APIRouter(tags=["monitoring"], dependencies=[requires(PREDICT)], responses=AUTH_ERRORS)

# The schema says exactly what parse_window accepts (positive and negative cases agree: schemathesis).
WINDOW_PATTERN = (
    r"^(?:[1-9][0-9]{0,8}|[1-9][0-9]{0,6}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h"
    r"|(?:[1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d|(?:[1-9]|[1-4][0-9]|5[0-2])w)$"
)
# Documented here, checked by the handlers (their messages name the rule; see _window).
Window = Annotated[
    str | None,
    Query(
        json_schema_extra={"pattern": WINDOW_PATTERN},
        description="A duration (30s, 15m, 1h, 1d, 2w; at most 366d) or a number of predictions (5000).",
    ),
]
Name = Annotated[str | None, Query(max_length=64)]
DriftMetric = Annotated[str | None, Query(json_schema_extra={"enum": ["psi", "js_distance"]})]
RealisedMetric = Annotated[str | None, Query(json_schema_extra={"enum": list(REALISED_METRICS)})]
Kind = Annotated[str | None, Query(json_schema_extra={"enum": list(KINDS)})]


def _window(kind: str, text: str | None) -> Any:
    """The window, refusing what the schema does not list (e.g. '1H', ' 1h') as the schema says."""
    parsed = monitor.window_of(kind, text)
    if text is not None and re.fullmatch(WINDOW_PATTERN, text) is None:
        raise InvalidRequest(
            f"window: unknown window {text!r}; use a duration (30s, 15m, 1h, 1d, 2w) or a number (5000)",
            "window",
        )
    return parsed


_RESPONSES: dict[int | str, dict[str, Any]] = {422: ERRORS[422], 503: ERRORS[503]}


@router.get("/v1/monitoring/drift", responses=_RESPONSES)
async def drift(
    state: StateDep, window: Window = None, variant: Name = None, metric: DriftMetric = None
) -> dict[str, Any]:
    """Per-feature PSI and Jensen-Shannon, unseen and missing shares, prediction drift, per variant."""
    parsed = _window("drift", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.drift(context.stores.monitor, context.params, parsed, variant=variant, metric=metric)

    return await asyncio.to_thread(run)


@router.get("/v1/monitoring/performance", responses=_RESPONSES)
async def performance(
    state: StateDep, window: Window = None, metric: RealisedMetric = None, kind: Kind = None
) -> dict[str, Any]:
    """Realised performance per cohort (confidence intervals, label coverage); the estimate before labels."""
    parsed = _window("performance", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.performance(context.stores.feedback, context.params, parsed, metric=metric, kind=kind)

    return await asyncio.to_thread(run)


@router.get("/v1/monitoring/cost", responses=_RESPONSES)
async def cost(state: StateDep, window: Window = None) -> dict[str, Any]:
    """Measured cost per 1,000 predictions per variant and its anomaly judgement (status not_configured
    without a price table)."""
    parsed = _window("cost", window)

    def run() -> dict[str, Any]:
        context = context_of(state)
        return monitor.cost(context.stores.monitor, context.params, parsed)

    return await asyncio.to_thread(run)

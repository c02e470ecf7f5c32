"""GET /dashboard: a live page served by the app itself (one HTML file, vanilla JS, inline SVG, no
external assets), and the JSON it polls.

`/dashboard/data` gathers what the page shows in one answer: the live slots, the prediction and
latency counters of every worker (the page turns two polls into requests/s, error rate and
latency percentiles), breakers, background tasks, the ledger's queue, and the drift, cost and
performance reports of jobs.monitor (drift and cost computed on each poll from the shared store;
performance, a ledger scan shared by all workers, at most every 2 x CHURNOPS_MONITOR_REFRESH_SECONDS).
`/dashboard/alias-moves` is the newest alias moves of the lifecycle history (`models history`).
"""

from __future__ import annotations

import asyncio
import time
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from churnops.core.auth import PREDICT
from churnops.io.registry import CHALLENGER
from churnops.jobs import monitor
from churnops.serving.deps import StateDep
from churnops.serving.metrics import LATENCY_BUCKETS, sum_counts, sum_histograms
from churnops.serving.monitoring import context_of
from churnops.serving.scopes import open_outside_production
from churnops.serving.state import ServiceState

router = APIRouter(tags=["dashboard"], dependencies=[open_outside_production(PREDICT)])

PAGE = Path(__file__).with_name("page.html")
SEED_COST_PER_1000_USD = 0.024  # the seed's figure, shown beside the measured one


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The live page (it polls /dashboard/data every few seconds)."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})


@router.get("/dashboard/data")
async def data(state: StateDep) -> dict[str, Any]:
    """Everything the page shows, in one answer."""
    reports = await asyncio.to_thread(_reports, state)
    return {"now": time.time(), **_service(state), **_counters(state), **reports}


ALIAS_MOVES_SHOWN = 10


@router.get("/dashboard/alias-moves")
async def alias_moves(state: StateDep) -> list[dict[str, Any]]:
    """The newest alias moves of the lifecycle history, with who and why ([] with the ledger off)."""
    from churnops.errors import NotReady
    from churnops.jobs.models import history
    from churnops.serving.routes.models import lifecycle_of

    try:
        lc = lifecycle_of(state)
    except NotReady:
        return []
    events = await asyncio.to_thread(history, lc, state.model_name, 200)
    moves = [e for e in events if e["outcome"] == "champion" and e["from"] != e["to"]]  # alias moved
    return [
        {
            "at": e["at"],
            "action": e["action"].removeprefix("models."),
            "from": e["from"],
            "to": e["to"],
            "by": e["principal"],
            "trigger": e["trigger"],
            "why": e["reason"],
        }
        for e in moves[:ALIAS_MOVES_SHOWN]
    ]


def _service(state: ServiceState) -> dict[str, Any]:
    champion, challenger = state.slots.champion, state.slots.get(CHALLENGER)
    state.refresh_gauges()
    metrics = state.metrics
    return {
        "model_name": state.model_name,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
        "slots": [
            slot.describe() | {"reference_profile": slot.drift is not None} for slot in state.slots.all()
        ],
        "breakers": dict(metrics.breakers),
        "tasks": dict(metrics.tasks_up),
        "audit": {k: metrics.audit.get(k, 0) for k in ("queue_depth", "spool_bytes")},
        "monitoring": "on" if state.monitor is not None else "off",
    }


def _counters(state: ServiceState) -> dict[str, Any]:
    snapshots = state.metrics.snapshots()
    predictions = [
        {"variant": v, "model_version": m, "outcome": o, "feature_source": s, "count": c}
        for (v, m, o, s), c in sorted(sum_counts(snapshots, "predictions").items())
    ]
    latency = [
        {"variant": v, "model_version": m, "buckets": values[:-1], "sum": values[-1]}
        for (v, m), values in sorted(sum_histograms(snapshots).items())
    ]
    return {"predictions": predictions, "latency": latency, "latency_bounds": list(LATENCY_BUCKETS)}


def _reports(state: ServiceState) -> dict[str, Any]:
    context = context_of(state)
    stores, params = context.stores, context.params
    drift = monitor.drift(stores.monitor, params, monitor.window_of("drift", None))
    cost = monitor.cost(stores.monitor, params, monitor.window_of("cost", None))
    with context.lock:  # one ledger scan at a time per worker, and few overall (shared through the store)
        cached = context.performance_cache
        if cached is None or time.monotonic() - cached[0] > 2 * state.settings.monitor_refresh_seconds:
            body = monitor.shared_performance(stores, params, 2 * state.settings.monitor_refresh_seconds)
            cached = context.performance_cache = (time.monotonic(), body)
    return {
        "drift": drift,
        "cost": cost,
        "performance": cached[1],
        "seed_cost_per_1000_usd": SEED_COST_PER_1000_USD,
        "thresholds": {
            "psi_warn": params.monitoring.drift.psi_warn,
            "psi_alert": params.monitoring.drift.psi_alert,
            "min_roc_auc": params.monitoring.gate.min_roc_auc,
        },
    }

"""Models: champion, challenger, pending approvals, the live slots; history, promotion, rollback, approval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Query, Request

from churnops.core.auth import ADMIN, PREDICT
from churnops.io.registry import CHALLENGER
from churnops.jobs.models import approve, history, rollback
from churnops.jobs.promote import Lifecycle, Move
from churnops.jobs.promote import promote as promote_path
from churnops.serving.asgi import principal_id
from churnops.serving.deps import StateDep
from churnops.serving.dto import (
    ErrorResponse,
    ModelHistoryResponse,
    ModelsResponse,
    MoveResponse,
    PromoteRequest,
    RollbackRequest,
)
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import requires
from churnops.serving.state import ServiceState

# Reads need `predict`, alias moves `admin` (scopes add up, so each route declares its own).
router = APIRouter(tags=["models"], responses=AUTH_ERRORS)

PENDING_TTL_S = 2.0  # the registry is asked at most this often for pending approvals
_MOVE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such version"},
    409: {"model": ErrorResponse, "description": "Nothing to roll back to, or the version is not pending"},
    422: ERRORS[422],
    503: ERRORS[503],
}
_pending: dict[int, tuple[float, list[str]]] = {}


@router.get("/v1/models", response_model=ModelsResponse, dependencies=[requires(PREDICT)])
async def models(state: StateDep) -> dict[str, Any]:
    """Champion, challenger, versions pending approval, variants and the live serving slots."""
    champion = state.slots.champion
    challenger = state.slots.get(CHALLENGER)
    return {
        "model_name": state.model_name,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
        "pending_approval": await _pending_approval(state),
        "variants": list(state.settings.variants),
        "slots": [slot.describe() for slot in state.slots.all()],
        "experiment": _experiment(state),
        "online_store": {
            "kind": state.features.kind,
            "feature_set_version": state.feature_set_version,
            **state.features.stats(),
        },
    }


def _experiment(state: StateDep) -> dict[str, Any] | None:
    """The running experiment this worker routes by: arms and shadows with their pinned versions."""
    experiment = state.experiment
    if experiment is None:
        return None
    return {
        "name": experiment.name,
        "revision": experiment.revision,
        "arms": {name: route.slot.version for name, route in experiment.arms.items()},
        "weights": experiment.definition.weights(),
        "shadows": {name: route.slot.version for name, route in experiment.shadows.items()},
    }


@router.get(
    "/v1/models/history",
    response_model=ModelHistoryResponse,
    responses={503: ERRORS[503]},
    dependencies=[requires(PREDICT)],
)
async def models_history(
    state: StateDep, limit: int | None = Query(None, ge=1, le=10_000, description="Newest N events.")
) -> dict[str, Any]:
    """Every alias move and gate decision, newest first: who, when, from, to, why, the evidence."""
    lc = lifecycle_of(state)
    events = await asyncio.to_thread(history, lc, state.model_name, limit)
    return {"model_name": state.model_name, "events": events}


@router.post(
    "/v1/models/rollback", response_model=MoveResponse, responses=_MOVE_ERRORS, dependencies=[requires(ADMIN)]
)
async def models_rollback(
    request: Request, state: StateDep, body: RollbackRequest | None = None
) -> dict[str, Any]:
    """Back to the champion the current one replaced (or `to`, a former champion); the caller is recorded."""
    body = body or RollbackRequest()
    return await _alias_move(
        state,
        request,
        lambda lc, who: rollback(lc, body.to, principal=who, model=state.model_name, reason=body.reason),
    )


@router.post(
    "/v1/models/{version}/promote",
    response_model=MoveResponse,
    responses=_MOVE_ERRORS,
    dependencies=[requires(ADMIN)],
)
async def models_promote(
    request: Request,
    state: StateDep,
    version: str = Path(pattern=r"^[0-9]{1,12}$"),
    body: PromoteRequest | None = None,
) -> dict[str, Any]:
    """Run the gates against the champion, then make the version champion (or pending approval). A
    failed gate is 409 naming it; `force` promotes anyway, recorded as an override with the failed
    gates and the caller (admin scope, like every alias move)."""
    body = body or PromoteRequest()
    return await _alias_move(
        state,
        request,
        lambda lc, who: promote_path(
            lc, version, principal=who, model=state.model_name, force=body.force, reason=body.reason
        ),
    )


@router.post(
    "/v1/models/{version}/approve",
    response_model=MoveResponse,
    responses=_MOVE_ERRORS,
    dependencies=[requires(ADMIN)],
)
async def models_approve(
    request: Request, state: StateDep, version: str = Path(pattern=r"^[0-9]{1,12}$")
) -> dict[str, Any]:
    """Approve a version pending approval: it becomes champion; the approver is recorded."""
    return await _alias_move(state, request, lambda lc, who: approve(lc, version, who, state.model_name))


async def _alias_move(
    state: ServiceState, request: Request, move: Callable[[Lifecycle, str | None], Move]
) -> dict[str, Any]:
    """One alias move by the caller, off the event loop (gates and MLflow calls block); then this
    worker follows it at once."""
    lc = lifecycle_of(state)
    done = await asyncio.to_thread(move, lc, principal_id(request.scope))
    await _follow(state)
    return done.to_dict()


def lifecycle_of(state: ServiceState) -> Lifecycle:
    """The promotion path on this worker's own registry client, ledger connection and event log."""
    from churnops.errors import NotReady
    from churnops.io.datasets import load_params

    if state.events is None or state.keys is None:
        raise NotReady("the prediction ledger is off (CHURNOPS_AUDIT=off): alias moves need their events")
    sql = state.events.store.store
    return Lifecycle(state.settings, load_params(None), state.registry, sql, state.events, state.keys)


async def _follow(state: ServiceState) -> None:
    """This worker swaps at once; the others hear of it on the change feed (`aliases`)."""
    from churnops.serving.reload import poll_once

    _pending.pop(id(state), None)
    await poll_once(state)


async def _pending_approval(state: ServiceState) -> list[str]:
    cached = _pending.get(id(state))
    if cached is not None and time.monotonic() - cached[0] < PENDING_TTL_S:
        return cached[1]
    try:
        versions = await asyncio.wait_for(
            asyncio.to_thread(state.registry.list_versions, state.model_name), 5
        )
    except Exception:  # the registry being slow never fails /v1/models: the last answer stands
        return cached[1] if cached else []
    pending = [v["version"] for v in versions if v.get("status") == "pending_approval"]
    _pending[id(state)] = (time.monotonic(), pending)
    return pending

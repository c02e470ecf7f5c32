"""A/B/n experiments: arms pinned to versions, shadows, results with honest statistics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from churnops.core.auth import ADMIN, PREDICT
from churnops.core.experiments import ExperimentDefinition
from churnops.jobs import experiments as jobs
from churnops.serving.asgi import principal_id
from churnops.serving.deps import StateDep
from churnops.serving.dto import ErrorResponse
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import requires

# reads: predict; writes: admin. 400: a body that is not JSON at all.
router = APIRouter(tags=["experiments"], responses={**AUTH_ERRORS, 400: ERRORS[400]})

Name = Path(min_length=1, max_length=64, description="Experiment name.")
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such experiment or arm"},
    409: {"model": ErrorResponse, "description": "Not running, a name clash, or another one runs"},
    422: ERRORS[422],
    503: ERRORS[503],
}


class Reweight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float] = Field(description="New weights by arm name (others keep theirs).")


class PromoteArm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arm: str = Field(min_length=1, max_length=64)


@router.get("/v1/experiments", responses=_RESPONSES, dependencies=[requires(PREDICT)])
async def list_experiments(state: StateDep) -> list[dict[str, Any]]:
    """Every experiment, newest first."""
    ctx = state.experiments()
    return await asyncio.to_thread(lambda: [jobs.describe(e) for e in ctx.store.all()])


@router.post("/v1/experiments", status_code=201, responses=_RESPONSES, dependencies=[requires(ADMIN)])
async def create_experiment(body: ExperimentDefinition, request: Request, state: StateDep) -> dict[str, Any]:
    """Start an experiment; every worker and replica routes by it within 2 s."""
    ctx = state.experiments()
    return await asyncio.to_thread(jobs.create, ctx, body, principal_id(request.scope))


@router.get("/v1/experiments/{name}", responses=_RESPONSES, dependencies=[requires(PREDICT)])
async def show_experiment(state: StateDep, name: str = Name) -> dict[str, Any]:
    """Definition, bucket counts per arm, and the history of its weights."""
    ctx = state.experiments()
    return await asyncio.to_thread(
        lambda: jobs.describe(ctx.store.get(name)) | {"history": ctx.store.history(name)}
    )


@router.patch("/v1/experiments/{name}", responses=_RESPONSES, dependencies=[requires(ADMIN)])
async def reweight_experiment(
    body: Reweight, request: Request, state: StateDep, name: str = Name
) -> dict[str, Any]:
    """New arm weights: only the customers whose bucket changes arm move."""
    ctx = state.experiments()
    return await asyncio.to_thread(jobs.reweight, ctx, name, body.weights, principal_id(request.scope))


@router.get("/v1/experiments/{name}/results", responses=_RESPONSES, dependencies=[requires(PREDICT)])
async def experiment_results(state: StateDep, name: str = Name) -> dict[str, Any]:
    """Per arm: counts, metrics with intervals, SRM, sequential tests (Holm), a decision with its reason."""
    ctx = state.experiments()
    return await asyncio.to_thread(jobs.results, ctx, name, state.business)


@router.post("/v1/experiments/{name}/stop", responses=_RESPONSES, dependencies=[requires(ADMIN)])
async def stop_experiment(request: Request, state: StateDep, name: str = Name) -> dict[str, Any]:
    """Stop routing by the experiment; the champion serves everyone again."""
    ctx = state.experiments()
    return await asyncio.to_thread(jobs.stop, ctx, name, principal_id(request.scope))


@router.post("/v1/experiments/{name}/promote", responses=_RESPONSES, dependencies=[requires(ADMIN)])
async def promote_arm(
    body: PromoteArm, request: Request, state: StateDep, name: str = Name
) -> dict[str, Any]:
    """Make the arm's pinned version champion and end the experiment."""
    ctx = state.experiments()
    return await asyncio.to_thread(jobs.promote, ctx, name, body.arm, principal_id(request.scope))

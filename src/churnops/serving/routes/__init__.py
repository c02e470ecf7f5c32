"""The HTTP API's routers, assembled in one place.

Every route declares who may call it, on the router or the route (`serving.auth`):
`dependencies=[requires(PREDICT)]` (all listed scopes needed), or `dependencies=[public()]`
for open routes. A route that declares neither is refused to everybody (deny by default),
and tests/integration/test_access_control.py walks the route table to keep it so. A new
router: declare on the APIRouter, override per route (e.g. `requires(ADMIN)` on writes of a
router whose reads need `predict`), add `responses=AUTH_ERRORS`, include it below.
"""

from __future__ import annotations

from fastapi import APIRouter

from churnops.serving import dashboard
from churnops.serving.routes import (
    experiments,
    feedback,
    health,
    keys,
    models,
    monitoring,
    predictions,
    privacy,
)

router = APIRouter()
for module in (predictions, feedback, models, experiments, privacy, monitoring, keys, health, dashboard):
    router.include_router(module.router)

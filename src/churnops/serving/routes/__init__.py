"""The HTTP API's routers, assembled in one place."""

from __future__ import annotations

from fastapi import APIRouter

from churnops.serving import dashboard
from churnops.serving.routes import experiments, feedback, health, models, monitoring, predictions, privacy

router = APIRouter()
for module in (predictions, feedback, models, experiments, privacy, monitoring, health, dashboard):
    router.include_router(module.router)

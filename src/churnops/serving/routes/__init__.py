"""The HTTP API's routers, assembled in one place."""

from __future__ import annotations

from fastapi import APIRouter

from churnops.serving.routes import feedback, health, models, predictions, privacy

router = APIRouter()
for module in (predictions, feedback, models, privacy, health):
    router.include_router(module.router)

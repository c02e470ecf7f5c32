"""The HTTP API's routers, assembled in one place."""

from __future__ import annotations

from fastapi import APIRouter

from churnops.serving.routes import health, models, predictions

router = APIRouter()
for module in (predictions, models, health):
    router.include_router(module.router)

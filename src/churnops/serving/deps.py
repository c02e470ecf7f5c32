"""FastAPI dependencies as `Annotated` aliases (overridable in tests)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from churnops.errors import NotReady
from churnops.serving.state import ServiceState


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = request.app.state.service
    if state is None:
        raise NotReady("the service is still starting")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]

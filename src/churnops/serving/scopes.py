"""Which scopes each route needs, declared on the FastAPI routes and read into a `ScopeTable`.

A route (or router) says `dependencies=[requires(ADMIN)]`, `public()` or
`open_outside_production(...)`; `build_table` walks the app once at start-up and the ASGI
`Authentication` layer (serving.auth) enforces the table before FastAPI runs. A route that
declares nothing is refused to everybody (deny by default). The declarations are also FastAPI
security dependencies, so OpenAPI documents the API key and bearer schemes on every route.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Security, routing
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import Route

from churnops.core import auth
from churnops.core.auth import OPEN, Principal, ScopeTable
from churnops.errors import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

UNDECLARED = frozenset({"<route declares no scope>"})
MISSING = (
    "missing credentials: send `X-API-Key: cho_...` (make one with `churnops keys create --name NAME"
    " --scopes predict`) or `Authorization: Bearer <JWT>`"
)


API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="cho_<key id>_<secret>")
BEARER = HTTPBearer(auto_error=False, description="JWT (HS256, RS256, ES256 or EdDSA)")


class RequireScopes:
    """Route dependency declaring the scopes a route needs (read by `build_table` at start-up).

    At request time it checks again (defense in depth) and returns the principal."""

    def __init__(self, *scopes: str) -> None:
        self.scopes = auth.parse_scopes(scopes)

    async def __call__(
        self,
        request: Request,
        _key: Annotated[str | None, Security(API_KEY)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> Principal:
        principal: Principal | None = request.scope.get("state", {}).get("principal")
        if principal is None:
            raise Unauthenticated(MISSING, "missing")
        authorize(principal, self.scopes)
        return principal


class Public:
    """Route dependency declaring a route open (no credentials): probes and metrics."""

    async def __call__(self) -> None:
        return None


class OpenOutsideProduction(Public):
    """Route dependency: open in development and staging, `scopes` needed in production
    (DESIGN: the dashboard is open in development)."""

    def __init__(self, *scopes: str) -> None:
        self.scopes = auth.parse_scopes(scopes)


def open_outside_production(*scopes: str) -> DependsParam:
    marker: DependsParam = Depends(OpenOutsideProduction(*scopes))
    return marker


def requires(*scopes: str) -> DependsParam:
    """`dependencies=[requires(ADMIN)]` on a route or a router."""
    marker: DependsParam = Depends(RequireScopes(*scopes))
    return marker


def public() -> DependsParam:
    marker: DependsParam = Depends(Public())
    return marker


def authorize(principal: Principal, required: frozenset[str]) -> None:
    if required <= principal.scopes:
        return
    missing = required - principal.scopes
    if required is UNDECLARED:
        raise Forbidden("this route declares no scope: refused to everybody (deny by default)", "undeclared")
    raise Forbidden(f"this route needs scope {sorted(missing)[0]!r}, which the caller lacks", "forbidden")


def _declared(dependant: Any, production: bool = False) -> frozenset[str] | None:
    scopes: set[str] = set()
    is_open = False
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RequireScopes) or (
            isinstance(dependency.call, OpenOutsideProduction) and production
        ):
            scopes |= dependency.call.scopes
        elif isinstance(dependency.call, Public):
            is_open = True
        inner = _declared(dependency, production)
        if inner is OPEN:
            is_open = True
        elif inner:
            scopes |= inner
    if scopes:
        return frozenset(scopes)
    return OPEN if is_open else None


def _routes(app: FastAPI) -> list[Any]:
    """Every route with its effective dependencies (router-level ones included). FastAPI >= 0.16x
    keeps included routers as branches; `iter_route_contexts` flattens them."""
    iterate = getattr(routing, "iter_route_contexts", None)
    return list(iterate(app.routes)) if iterate is not None else list(app.routes)


def build_table(app: FastAPI, production: bool = False) -> tuple[ScopeTable, list[str]]:
    """Walk every route of the app: (the table, routes that declare nothing and are refused)."""
    table = ScopeTable()
    undeclared: list[str] = []
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    for route in _routes(app):
        original = getattr(route, "original_route", route)
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        path = str(getattr(route, "path", None) or "")
        if isinstance(original, APIRoute):
            scopes = _declared(route.dependant, production)
        elif isinstance(original, Route) and path in docs:
            scopes = OPEN
        else:
            scopes = None
        if scopes is None:
            undeclared += [f"{m} {path or type(original).__name__}" for m in methods]
            scopes = UNDECLARED
        if path:
            table.add(path, methods, scopes)
    if undeclared:
        logger.warning("routes without a declared scope, refused to everybody: %s", ", ".join(undeclared))
    return table, undeclared

"""`create_app(settings) -> FastAPI`: the scoring service; `serving_app` is what uvicorn runs.

The lifespan loads and verifies the champion (and any variants), fills the
feature source, starts the registry watcher and the housekeeping task, then
freezes the garbage collector's view of the start-up objects (a full GC pass
over them caused 150-470 ms p99 spikes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from churnops import __version__
from churnops.errors import ChurnopsError
from churnops.serving import openapi
from churnops.serving.asgi import AccessLog, ASGIApp, FastRoutes, RequestContext
from churnops.serving.auth import AccessControl, Authentication, RateLimit
from churnops.serving.change_handlers import follow_changes
from churnops.serving.errors import error_body, error_headers, error_response
from churnops.serving.experiment_routing import run_bandit
from churnops.serving.monitoring import run_monitoring
from churnops.serving.reload import watch_aliases
from churnops.serving.routes import router
from churnops.serving.state import ServiceState, build_state
from churnops.serving.supervisor import Supervisor
from churnops.settings import Settings

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    state: ServiceState | None = None,
    access_log: AccessLog | None = None,
    access: AccessControl | None = None,
) -> FastAPI:
    """The ordinary FastAPI application: every route, the OpenAPI schema, error handlers, lifespan.

    Pass a prebuilt `state` to skip loading from the registry (tests, embedding). Without
    `access` (the layers of `serving_app`) every route but the open ones refuses: no principal.
    """
    settings.check_production()
    access_log = access_log or AccessLog(settings.access_log_sample)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if access is not None:
            await access.start()  # keys, limiter, nonces: before the first request
        service: ServiceState = state if state is not None else await asyncio.to_thread(build_state, settings)
        if access is not None:
            access.bind_metrics(service.metrics)
            access.follow(service.follower)  # topic `keys`: revocations from every process
        app.state.service = service
        await service.features.warm()
        stop = asyncio.Event()
        service.supervisor = supervisor = start_background(service, access_log, stop)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            stop.set()
            await supervisor.join()  # the ledger writer drains its queue into the database or the spool
            access_log.flush()
            service.metrics.publish()  # a last snapshot: counters outlive the worker
            await service.features.close()
            if access is not None:
                await access.close()

    app = FastAPI(
        title="churnops",
        version=__version__,
        summary="Churn predictions with reason codes from the registered champion model.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.service = None
    app.state.settings = settings
    app.include_router(router)
    openapi.install(
        app, lambda: app.state.service.rules if app.state.service else None, settings.max_batch_instances
    )
    _install_error_handlers(app)
    return app


def serving_app(settings: Settings, state: ServiceState | None = None) -> ASGIApp:
    """The served ASGI stack: request context (id, timing, access log) -> authentication -> rate limit
    -> fast prediction routes -> FastAPI.

    The prediction routes are answered before FastAPI's own middleware and routing,
    which cost more than the whole prediction; every other route is plain FastAPI. Both sit
    behind the same access-control layers.
    """
    access_log = AccessLog(settings.access_log_sample)
    access = AccessControl(settings)
    app = create_app(settings, state, access_log, access)
    access.route_table(app)
    app.state.access = access

    def state_of() -> ServiceState | None:
        service: ServiceState | None = app.state.service
        return service

    routes = FastRoutes(app, state_of)
    return RequestContext(Authentication(RateLimit(routes, access), access), state_of, access_log)


def start_background(service: ServiceState, access_log: AccessLog, stop: asyncio.Event) -> Supervisor:
    """Every background task of a worker, supervised: a failure is logged, counted and restarted."""
    supervisor = Supervisor(stop)
    supervisor.start("registry-watcher", lambda stop: watch_aliases(service, stop))
    supervisor.start("housekeeping", lambda stop: _housekeeping(service, access_log, stop))
    if service.ledger is not None:
        supervisor.start("ledger-writer", service.ledger.run)
    if service.follower is not None:
        follow_changes(service, service.follower)
        supervisor.start("change-feed", service.follower.run)
    supervisor.start("experiment-bandit", lambda stop: run_bandit(service, stop))
    if service.monitor is not None:
        supervisor.start("monitoring", lambda stop: run_monitoring(service, stop))
    return supervisor


async def _housekeeping(service: ServiceState, access_log: AccessLog, stop: asyncio.Event) -> None:
    """Once a second, off the request path: publish metrics for other workers, write access logs."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        await asyncio.to_thread(_publish, service, access_log)


def _publish(service: ServiceState, access_log: AccessLog) -> None:
    """Formatting and writing happen in a worker thread, not on the event loop."""
    access_log.flush()
    service.refresh_gauges()
    service.metrics.publish()


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))


_PATH_IN_MESSAGE = re.compile(r"^(?P<path>[A-Za-z_][\w\[\].]*): (?P<rest>.*)$", re.S)


def validation_field(error: Mapping[str, Any]) -> tuple[str, str]:
    """(field path, message) of one pydantic error. A rule checked on the whole model names its
    field in the message (`arms[2].name: ...`): that path is the field then, with dots like the rest."""
    field = ".".join(str(p) for p in error["loc"] if p != "body")
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        match = _PATH_IN_MESSAGE.match(message)
        if match is None:
            return "body", message
        field, message = match["path"].replace("[", ".").replace("]", ""), match["rest"]
    return field, message


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        field, message = validation_field(exc.errors()[0])
        body = error_body(422, "validation_error", f"{field}: {message}", _request_id(request), field)
        return Response(body, 422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = error_body(exc.status_code, code, str(exc.detail), _request_id(request))
        # Starlette puts `Allow` on its 405s (RFC 9110 requires it): keep the exception's headers.
        return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")

    @app.exception_handler(ChurnopsError)
    async def domain_error(request: Request, exc: ChurnopsError) -> Response:
        status, body = error_response(exc, _request_id(request))
        headers = {k.decode(): v.decode() for k, v in error_headers(exc)}
        return Response(body, status, headers=headers, media_type="application/json")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        status, body = error_response(exc, _request_id(request))
        return Response(body, status, media_type="application/json")


def app_factory() -> ASGIApp:
    """Entry point for uvicorn workers (`factory=True`): each builds Settings and logging itself."""
    from churnops.serving import logs

    settings = Settings()
    logs.configure(settings)
    return serving_app(settings)

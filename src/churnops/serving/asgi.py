"""Pure ASGI pieces: the request-context middleware and the fast prediction routes.

`/v1/predict` and `/v1/predict/batch` are answered here without FastAPI's
per-request routing, dependency injection and pydantic round trip; they stay in
the OpenAPI schema through ordinary FastAPI routes that call the same handlers.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from churnops.errors import ChurnopsError, PayloadTooLarge
from churnops.serving.errors import error_response
from churnops.serving.predict_api import handle_batch, handle_predict

if TYPE_CHECKING:
    from churnops.serving.state import ServiceState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("churnops.access")
JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientDisconnected(ChurnopsError):
    """The client went away before sending its whole body."""


class AccessLog:
    """Access log lines queued by requests and written by a background task once a second,
    off the request path; errors are always kept, successes at `sample` rate."""

    def __init__(self, sample: float) -> None:
        self.sample = sample
        self.pending: deque[dict[str, Any]] = deque(maxlen=10_000)

    def record(self, entry: dict[str, Any]) -> None:
        if entry["status"] >= 400 or random.random() < self.sample:
            self.pending.append(entry)

    def flush(self) -> int:
        count = 0
        while self.pending:
            logger.info("access", extra={"access": self.pending.popleft()})
            count += 1
        return count


class RequestContext:
    """Request id (`X-Request-ID` in or generated), timing, HTTP metrics and the access log."""

    def __init__(
        self, app: ASGIApp, state_of: Callable[[], ServiceState | None], access_log: AccessLog
    ) -> None:
        self.app = app
        self.state_of = state_of
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or self._new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            self._record(scope, status, request_id, time.perf_counter() - started)

    def _new_id(self) -> str:
        state = self.state_of()
        return state.next_request_id() if state is not None else f"boot-{random.getrandbits(32):x}"

    def _record(self, scope: Scope, status: int, request_id: str, seconds: float) -> None:
        state = self.state_of()
        route = route_template(scope)
        if state is not None:
            state.metrics.observe_http(scope["method"], route, status)
        self.access_log.record(
            {
                "method": scope["method"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1e3, 3),
                "request_id": request_id,
            }
        )


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/privacy/customers/{customer_id}`), never the raw path:
    metric labels and log lines must not carry customer ids. Unmatched paths share one label."""
    fast = scope.get("route_name")
    if fast:
        return str(fast)
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def principal_id(scope: Scope) -> str | None:
    """Who is calling, as the ledger records it (API key id or JWT subject), when authenticated."""
    principal = scope.get("state", {}).get("principal")
    return None if principal is None else getattr(principal, "ledger_id", None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text = value.decode("latin-1")
            return text if 0 < len(text) <= 128 and text.isprintable() else None
    return None


class FastRoutes:
    """Answers POST /v1/predict and /v1/predict/batch directly; everything else goes to FastAPI."""

    def __init__(self, app: ASGIApp, state_of: Callable[[], ServiceState | None]) -> None:
        self.app = app
        self.state_of = state_of
        self.routes = {"/v1/predict": handle_predict, "/v1/predict/batch": handle_batch}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        state = self.state_of()
        if handler is None or scope["method"] != "POST" or state is None:
            await self.app(scope, receive, send)
            return
        scope["route_name"] = scope["path"]
        request_id = scope["state"]["request_id"]
        limit = (
            state.settings.max_batch_body_bytes if handler is handle_batch else state.settings.max_body_bytes
        )
        try:
            body = await read_body(scope, receive, limit)
        except ClientDisconnected:
            return
        except PayloadTooLarge as err:
            status, payload = error_response(err, request_id)
        else:
            status, payload = await handler(state, body, request_id, principal_id(scope))
        await send_json(send, status, payload)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing anything over `limit` bytes (413) without reading it all."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(
    send: Send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Access control on the pure-ASGI stack: authentication, then the per-key rate limit.

    request context -> Authentication -> RateLimit -> fast prediction routes -> FastAPI

`Authentication` finds the route's rule in the `ScopeTable` (built once from the FastAPI
app's routes: each declares its scopes with `requires(...)` or `public()`), accepts an API
key (`X-API-Key`) or a JWT (`Authorization: Bearer`), checks the HMAC signature of signed
keys on the raw body, checks scopes, and puts the `Principal` in `scope["state"]["principal"]`.
Deny by default: an unknown path or method needs an authenticated caller (then FastAPI's
404/405), a route that declares no scope is refused to everybody.

Hot path: a presented key seen before costs one dict lookup (HMAC once per distinct key,
dropped when the key is revoked); a JWT seen before likewise until its expiry; the rate
limit spends a lease in-process (see `churnops.io.rate_limiter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Security, routing
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import Route

from churnops.core import auth, signing
from churnops.core.auth import ANONYMOUS, OPEN, Principal, Rate, ScopeTable
from churnops.core.gcra import header_fields
from churnops.errors import (
    AccessError,
    ConfigError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from churnops.serving.asgi import (
    ASGIApp,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
    send_json,
)
from churnops.serving.errors import error_headers, error_response
from churnops.serving.tokens import TokenVerifier, hs_secret

if TYPE_CHECKING:
    from fastapi import FastAPI

    from churnops.io.key_store import KeyRecord, SqlKeyStore
    from churnops.io.nonce_store import NonceStore
    from churnops.io.rate_limiter import Lease, RateLimiter
    from churnops.io.secrets import Secrets
    from churnops.settings import Settings

logger = logging.getLogger(__name__)

UNDECLARED = frozenset({"<route declares no scope>"})
MISSING = (
    "missing credentials: send `X-API-Key: cho_...` (make one with `churnops keys create --name NAME"
    " --scopes predict`) or `Authorization: Bearer <JWT>`"
)
REFRESH_SECONDS = 1.0  # revocations reach every worker within this plus one poll


# -- route declarations (FastAPI side) ---------------------------------------------------------

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


# -- API key cache -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyEntry:
    principal: Principal
    signing_secret: str | None
    expires_at: float | None  # epoch seconds


class KeyCache:
    """Presented key -> principal, verified once per distinct key; revocations drop entries.

    `apply_change({"key_id", "action": "revoked"})` is the change-feed seam; `refresh()` polls
    the store for revocations of the keys this worker holds (the fallback every second)."""

    def __init__(
        self,
        store: SqlKeyStore,
        secrets: Secrets,
        default_rate: Rate,
        negative_ttl_s: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.default_rate = default_rate
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.verified: dict[str, KeyEntry] = {}
        self.records: dict[str, KeyRecord] = {}
        self.unknown: dict[str, float] = {}  # key id -> monotonic time its absence expires
        self.revoked: set[str] = set()
        self.rates: dict[str, Rate] = {}
        self.lookups = asyncio.Semaphore(4)

    async def resolve(self, presented: str) -> KeyEntry:
        entry = self.verified.get(presented)
        if entry is not None:
            if entry.expires_at is not None and time.time() >= entry.expires_at:
                raise Unauthenticated("API key has expired: make a new one", "expired_key")
            return entry
        return await self._verify(presented)

    async def _verify(self, presented: str) -> KeyEntry:
        try:
            key_id, secret = auth.parse_key(presented)
        except auth.MalformedKey as err:
            raise Unauthenticated(str(err), "malformed_key") from err
        record = await self._record(key_id)
        if record is None or not auth.secret_matches(self.secrets.pepper, secret, record.secret_hash):
            raise Unauthenticated("unknown API key", "unknown_key")
        if record.revoked_at_us is not None or key_id in self.revoked:
            raise Unauthenticated(f"API key {key_id} is revoked", "revoked_key")
        expires_at = record.expires_at_us / 1e6 if record.expires_at_us is not None else None
        if expires_at is not None and time.time() >= expires_at:
            raise Unauthenticated("API key has expired: make a new one", "expired_key")
        entry = KeyEntry(self._principal(record), self._signing_secret(record), expires_at)
        if len(self.verified) >= self.max_entries:
            self.verified.clear()
        self.verified[presented] = entry
        return entry

    async def _record(self, key_id: str) -> KeyRecord | None:
        record = self.records.get(key_id)
        if record is not None:
            return record
        if self.unknown.get(key_id, 0.0) > time.monotonic():
            return None
        async with self.lookups:  # well-formed unknown keys cannot flood the database
            record = await asyncio.to_thread(self.store.get, key_id)
        if record is None:
            if len(self.unknown) >= self.max_entries:
                self.unknown.clear()
            self.unknown[key_id] = time.monotonic() + self.negative_ttl_s
            return None
        if key_id not in self.revoked:  # a revocation may have landed while we read
            self.records[key_id] = record
        return record

    def _principal(self, record: KeyRecord) -> Principal:
        rate = self.default_rate
        if record.rate_limit:
            rate = self.rates.get(record.rate_limit) or self.rates.setdefault(
                record.rate_limit, auth.parse_rate(record.rate_limit)
            )
        key_id = record.key_id
        return Principal("key", key_id, record.scopes, f"key:{key_id}", rate)

    def _signing_secret(self, record: KeyRecord) -> str | None:
        if not record.signed:
            return None
        from churnops.jobs.keys import open_signing_secret

        return open_signing_secret(self.secrets, record)

    def apply_change(self, payload: Mapping[str, Any]) -> None:
        """Change-feed seam (topic `keys`): `{"key_id": ..., "action": "revoked"}`."""
        key_id = payload.get("key_id")
        if payload.get("action") != "revoked" or not isinstance(key_id, str):
            return
        self.revoked.add(key_id)
        self.records.pop(key_id, None)
        self.verified = {k: e for k, e in self.verified.items() if e.principal.subject != key_id}
        logger.info("api key %s revoked: dropped from this worker's cache", key_id)

    async def refresh(self) -> int:
        """Poll the store for revocations among the keys this worker holds; returns how many."""
        held = [k for k in self.records if k not in self.revoked]
        if not held:
            return 0
        revoked = await asyncio.to_thread(self.store.revoked_among, held)
        for key_id in revoked:
            self.apply_change({"key_id": key_id, "action": "revoked"})
        return len(revoked)


# -- the access-control service object ---------------------------------------------------------------


class AccessControl:
    """Everything the two layers need, opened in the lifespan (`start`) and closed with it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.auth == "on"
        self.table = ScopeTable()
        self.undeclared: list[str] = []
        self.default_rate = auth.parse_rate(settings.rate_limit)
        secret = settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else None
        self.tokens = TokenVerifier(
            settings.jwt_issuer,
            settings.jwt_audience,
            hs_secret(secret),
            settings.jwt_jwks,
            self.default_rate,
        )
        self.keys: KeyCache | None = None
        self.limiter: RateLimiter | None = None
        self.nonces: NonceStore | None = None
        self.store: SqlKeyStore | None = None
        self.failures: dict[str, int] = {}
        self._policies: dict[Rate, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self.metrics: Any = None
        self.polling = True  # until a change-feed follower takes over (`follow`)

    def bind_metrics(self, metrics: Any) -> None:
        """Share the live counters with the worker's ServiceMetrics (published with the rest)."""
        self.metrics = metrics
        metrics.auth_failures = self.failures
        if self.limiter is not None:
            metrics.rate_limit_decisions = self.limiter.decisions

    def follow(self, follower: Any) -> None:
        """Revocations arrive on the change feed (topic `keys`); without a follower (a state built
        without one) this worker polls the key store for them instead, once a second."""
        if follower is None or self.keys is None:
            return
        keys = self.keys
        follower.on("keys", keys.apply_change)
        self.polling = False

    def route_table(self, app: FastAPI) -> None:
        self.table, self.undeclared = build_table(app, self.settings.app_env == "production")

    async def start(self) -> None:
        from churnops.io.key_store import SqlKeyStore
        from churnops.io.nonce_store import open_nonce_store
        from churnops.io.rate_limiter import FAILURES, RedisBuckets, open_rate_limiter
        from churnops.io.secrets import load_secrets

        if not self.enabled:
            logger.warning("CHURNOPS_AUTH=off: every route is open to anyone who reaches the port")
            return
        url = self.settings.online_store_url
        processes = self.settings.replicas * self.settings.serve_workers
        self.store = SqlKeyStore(self.settings.sql_store_url)
        self.keys = KeyCache(
            self.store, await asyncio.to_thread(load_secrets, self.settings), self.default_rate
        )
        deadline = self.settings.rate_limit_deadline_ms / 1e3
        self.limiter = open_rate_limiter(url, processes, deadline)
        # A signed request waits for its nonce anyway (fail closed): a longer deadline than the
        # limiter's, so a busy moment refuses fewer of them.
        self.nonces = open_nonce_store(url, max(4 * deadline, 0.02))
        if isinstance(self.limiter.shared, RedisBuckets):
            try:
                await self.limiter.shared.warm()
            except FAILURES as err:
                self.limiter.breaker.record_failure()
                logger.warning("rate limiter: Redis not reachable at start-up (%s): local limits", err)
        await asyncio.to_thread(self.store.get, "000000000000")  # migrate and connect now, not per request
        self._task = asyncio.create_task(self._refresh_forever(), name="access-refresh")

    async def _refresh_forever(self) -> None:
        """Revocations (and JWKS rotation) every second, off the request path; never dies."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                if self.keys is not None and self.polling:
                    await self.keys.refresh()
                await asyncio.to_thread(self.tokens.reload)
                if self.metrics is not None and self.limiter is not None:
                    self.metrics.breakers["rate_limiter"] = int(self.limiter.breaker.state)
            except Exception as err:  # a failed poll is retried next second, never fatal
                logger.warning("access refresh failed (%s: %s): retrying", type(err).__name__, err)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for closable in (self.limiter, self.nonces):
            if closable is not None:
                await closable.close()
        if self.store is not None:
            self.store.close()

    # -- per request ----------------------------------------------------------------------------

    async def authenticate(self, scope: Scope, receive: Receive) -> tuple[Principal, Receive]:
        if not self.enabled:
            return ANONYMOUS, receive
        api_key = authorization = signature = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-signature":
                signature = value.decode("latin-1")
        if api_key is not None and authorization is not None:
            raise Unauthenticated("send one credential: X-API-Key or Authorization, not both", "ambiguous")
        if api_key is not None:
            if self.keys is None:
                raise Unavailable("the service is still starting")
            entry = await self.keys.resolve(api_key)
            if entry.signing_secret is not None:
                receive = await self._verify_signature(scope, receive, entry, signature)
            return entry.principal, receive
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("Authorization: only `Bearer <JWT>` is accepted", "invalid_token")
            return self.tokens.verify(token.strip()), receive
        raise Unauthenticated(MISSING, "missing")

    async def _verify_signature(
        self, scope: Scope, receive: Receive, entry: KeyEntry, header: str | None
    ) -> Receive:
        if entry.signing_secret is None or self.nonces is None:
            raise Unavailable("request signing is not ready")
        try:
            timestamp, nonce, presented = signing.parse_header(header)
            signing.check_timestamp(timestamp, time.time())
            body = await read_body(scope, receive, self._body_limit(scope["path"]))  # cap before hashing
            query = scope.get("query_string", b"").decode("latin-1")
            canonical = signing.canonical_string(
                timestamp, nonce, scope["method"], scope["path"], query, body
            )
            signing.verify(entry.signing_secret, canonical, presented)
        except signing.BadSignature as err:
            raise Unauthenticated(str(err), err.reason) from err
        if not await self.nonces.claim(f"{entry.principal.subject}:{nonce}", signing.NONCE_TTL_SECONDS):
            raise Unauthenticated("X-Signature nonce already used: replay refused", "replayed_nonce")
        return _replay(body, receive)

    def _body_limit(self, path: str) -> int:
        s = self.settings
        return s.max_batch_body_bytes if path == "/v1/predict/batch" else s.max_body_bytes

    def count_failure(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def rate_headers(self, lease: Lease) -> list[tuple[bytes, bytes]]:
        rate = lease.rate
        policy = self._policies.get(rate)
        if policy is None:
            policy = self._policies[rate] = header_fields(rate, 0, 0)[0].encode()
        reset = max(math.ceil(lease.reset_at - time.monotonic()), 0)
        current = b'"key";r=%d;t=%d' % (lease.remaining + lease.left, reset)
        return [(b"ratelimit-policy", policy), (b"ratelimit", current)]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body downstream once, then defers to the client."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, scope: Scope, err: BaseException) -> None:
    status, body = error_response(err, scope.get("state", {}).get("request_id", "unknown"))
    await send_json(send, status, body, error_headers(err))


class Authentication:
    """ASGI layer: credentials -> principal (or 401/403/413/503); open routes pass untouched."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.access
        rules = access.table.lookup(scope["path"])
        rule = rules.get(scope["method"]) if rules is not None else None
        if rule is not None and rule.scopes is OPEN:
            await self.app(scope, receive, send)
            return
        try:
            principal, receive = await access.authenticate(scope, receive)
            if rule is not None:
                authorize(principal, rule.scopes)
        except ClientDisconnected:
            return
        except (AccessError, Unavailable, PayloadTooLarge, ConfigError) as err:
            access.count_failure(getattr(err, "reason", type(err).__name__.lower()))
            await _refuse(send, scope, err)
            return
        scope["state"]["principal"] = principal
        await self.app(scope, receive, send)


class RateLimit:
    """ASGI layer: spends one token of the principal's limit; 429 with Retry-After when spent."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope["state"].get("principal") if scope["type"] == "http" else None
        limiter = self.access.limiter
        if principal is None or principal.rate is None or limiter is None:
            await self.app(scope, receive, send)
            return
        try:
            lease = await limiter.acquire(principal.ledger_id, principal.rate)
        except RateLimited as err:
            await _refuse(send, scope, err)
            return
        headers = self.access.rate_headers(lease)

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_limits)

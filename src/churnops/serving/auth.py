"""Access control on the pure-ASGI stack: authentication, then the per-key rate limit.

    request context -> Authentication -> RateLimit -> fast prediction routes -> FastAPI

`Authentication` finds the route's rule in the `ScopeTable` (built once from the FastAPI
app's routes, each declaring its scopes with `requires(...)` or `public()`: serving.scopes),
accepts an API key (`X-API-Key`: serving.key_cache) or a JWT (`Authorization: Bearer`:
serving.tokens), checks the HMAC signature of signed keys on the raw body, checks scopes, and
puts the `Principal` in `scope["state"]["principal"]`.
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
from typing import TYPE_CHECKING, Any

from churnops.core import auth, signing
from churnops.core.auth import ANONYMOUS, OPEN, Principal, Rate, ScopeTable
from churnops.core.gcra import header_fields
from churnops.errors import (
    AccessError,
    ConfigError,
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
from churnops.serving.key_cache import KeyCache, KeyEntry
from churnops.serving.scopes import MISSING, authorize, build_table
from churnops.serving.tokens import TokenVerifier, hs_secret

if TYPE_CHECKING:
    from fastapi import FastAPI

    from churnops.io.key_store import SqlKeyStore
    from churnops.io.nonce_store import NonceStore
    from churnops.io.rate_limiter import Lease, RateLimiter
    from churnops.settings import Settings

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0  # revocations reach every worker within this plus one poll


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

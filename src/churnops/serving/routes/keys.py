"""API keys over HTTP (admin): create (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from churnops.core.auth import ADMIN, Principal
from churnops.errors import NotReady
from churnops.jobs import keys as key_jobs
from churnops.serving.auth import AccessControl
from churnops.serving.dto import ErrorResponse, KeyCreated, KeyCreateRequest, KeyInfo
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import RequireScopes

router = APIRouter(tags=["keys"], responses=AUTH_ERRORS)
Admin = Annotated[Principal, Depends(RequireScopes(ADMIN))]
KeyId = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$", description="The key id (not the key).")]


def _access(request: Request) -> AccessControl:
    access: AccessControl | None = getattr(request.app.state, "access", None)
    if access is None or access.store is None or access.keys is None:
        raise NotReady("access control is not running (CHURNOPS_AUTH=off?)")
    return access


def _events(request: Request) -> Any:
    """The service's ledger event log (None with CHURNOPS_AUDIT=off): admin actions are recorded."""
    service = request.app.state.service
    return service.events if service is not None else None


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=KeyCreated,
    responses={400: ERRORS[400], 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def create(body: KeyCreateRequest, request: Request, principal: Admin) -> dict[str, str]:
    """Create a key with at most the caller's own scopes; the key is shown once."""
    access = _access(request)
    assert access.store is not None
    assert access.keys is not None
    made = key_jobs.make_key(
        access.store,
        access.keys.secrets,
        name=body.name,
        scopes=frozenset(body.scopes),
        rate_limit=body.rate_limit,
        signed=body.signed,
        expires_in_days=body.expires_in_days,
        created_by=principal.ledger_id,
        allowed=principal.scopes,
        events=_events(request),
    )
    return made.shown_once()


@router.get("/v1/keys", response_model=list[KeyInfo], responses={503: {"model": ErrorResponse}})
def list_keys(request: Request, _: Admin) -> list[dict[str, Any]]:
    """Every key, never a secret."""
    access = _access(request)
    assert access.store is not None
    return [record.public() for record in access.store.all()]


@router.delete(
    "/v1/keys/{key_id}",
    response_model=KeyInfo,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def revoke(key_id: KeyId, request: Request, principal: Admin) -> dict[str, Any]:
    """Revoke a key: refused at once here, by every worker and replica within 2 s."""
    access = _access(request)
    assert access.store is not None
    assert access.keys is not None
    service = request.app.state.service
    feed = service.feed if service is not None else None
    record = key_jobs.revoke(access.store, key_id, feed, _events(request), principal.ledger_id)
    access.keys.apply_change({"key_id": key_id, "action": "revoked"})
    return record.public()

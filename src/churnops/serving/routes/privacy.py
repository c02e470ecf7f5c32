"""GDPR/CCPA: a customer's data (access), erasure and opt-out; audit scope."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request

from churnops.core.auth import AUDIT
from churnops.jobs.privacy import erase_customer, export_customer, opt_out_customer
from churnops.serving.asgi import principal_id
from churnops.serving.change_handlers import forget_subject
from churnops.serving.deps import StateDep
from churnops.serving.dto import ErrorResponse, PrivacyActionResponse
from churnops.serving.routes._common import AUTH_ERRORS, ERRORS
from churnops.serving.scopes import requires

router = APIRouter(tags=["privacy"], dependencies=[requires(AUDIT)], responses=AUTH_ERRORS)

CustomerId = Path(min_length=1, max_length=128, description="The customer's id, as in your data.")
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Nothing is held on this customer"},
    503: ERRORS[503],
}


@router.get("/v1/privacy/customers/{customer_id}", responses=_RESPONSES)
async def customer_data(state: StateDep, customer_id: str = CustomerId) -> dict[str, Any]:
    """Every record held on the customer, decrypted (GDPR Art. 15); after erasure, the tombstone."""
    privacy = state.privacy()
    return await asyncio.to_thread(export_customer, privacy, customer_id)


@router.delete(
    "/v1/privacy/customers/{customer_id}", response_model=PrivacyActionResponse, responses=_RESPONSES
)
async def erase(request: Request, state: StateDep, customer_id: str = CustomerId) -> dict[str, Any]:
    """Erase the customer everywhere; the ledger keeps a tombstone and still verifies (GDPR Art. 17)."""
    privacy = state.privacy()
    result = await asyncio.to_thread(erase_customer, privacy, customer_id, principal_id(request.scope))
    await forget_subject(state, result["subject"])  # this worker at once; all of them via the change feed
    return _action(result)


@router.post(
    "/v1/privacy/customers/{customer_id}/opt-out", response_model=PrivacyActionResponse, responses=_RESPONSES
)
async def opt_out(request: Request, state: StateDep, customer_id: str = CustomerId) -> dict[str, Any]:
    """CCPA opt-out: left out of every later training set."""
    privacy = state.privacy()
    result = await asyncio.to_thread(opt_out_customer, privacy, customer_id, principal_id(request.scope))
    return _action(result)


def _action(result: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in result.items() if k not in ("subject", "event_id")}
    return {"subject": result["subject"], "event_id": result.get("event_id"), "details": details}

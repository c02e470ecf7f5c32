"""Request and response models of the HTTP API (they feed the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

Scalar = str | int | float | bool | None


class PredictRequestModel(BaseModel):
    """Score one customer; `features` overrides or completes the stored vector.

    Unknown fields are rejected (422), at the top level and among `features`.
    """

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128, examples=["C0000042"])
    features: dict[str, Scalar] | None = Field(None, examples=[{"contract": "One year", "support_calls": 4}])


class Reason(BaseModel):
    feature: str
    contribution: float = Field(description="Contribution to the churn log-odds (path attribution).")


class ModelRef(BaseModel):
    name: str
    version: str
    variant: str


class PredictResponseModel(BaseModel):
    customer_id: str
    churn_probability: float
    churn: bool
    threshold: float
    model: ModelRef
    reasons: list[Reason]
    feature_source: str = Field(description="online_store, request, or online_store+request")
    prediction_id: str = Field(
        description="Server-made UUIDv7 of the ledger record (send it back with /v1/feedback)."
    )
    request_id: str


class BatchRequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[PredictRequestModel] = Field(min_length=1, max_length=10_000)


class BatchResponseModel(BaseModel):
    predictions: list[dict[str, object]] = Field(
        description="One PredictResponse per instance, or {customer_id, error} for an unknown customer."
    )
    request_id: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class SlotModel(BaseModel):
    name: str
    version: str
    variant: str
    candidate: str
    threshold: float
    feature_set_version: str | None
    loaded_at: float


class ModelsResponse(BaseModel):
    model_name: str
    champion: str | None
    challenger: str | None
    pending_approval: list[str] = Field(
        default_factory=list, description="Versions that passed their gates and wait for an approval."
    )
    variants: list[str]
    slots: list[SlotModel]
    experiment: dict[str, object] | None = Field(
        None, description="The running experiment: arms and shadows with their pinned versions."
    )
    online_store: dict[str, object]


class ModelEvent(BaseModel):
    """One alias move or gate decision of the promotion path."""

    event_id: str
    at: str
    action: str = Field(description="models.register | promote | approve | rollback | reject | pending")
    principal: str | None
    model: str | None
    from_: str | None = Field(None, alias="from", description="The champion before.")
    to: str | None
    outcome: str | None = Field(description="champion | pending_approval | rejected")
    trigger: str | None
    reason: str | None
    override: dict[str, object] | None = None
    gates: dict[str, object] | None = Field(None, description="The verdicts it rested on (the evidence).")


class ModelHistoryResponse(BaseModel):
    model_name: str
    events: list[ModelEvent]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(
        None, pattern=r"^[0-9]{1,12}$", description="A former champion (default: the replaced one)."
    )
    reason: str | None = Field(None, max_length=500)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(
        False, description="Promote over failed gates or a pending approval: recorded as an override."
    )
    reason: str | None = Field(None, max_length=500, description="Why, recorded with the event.")


class MoveResponse(BaseModel):
    action: str
    model: str
    version: str
    from_: str | None = Field(None, alias="from")
    outcome: str
    moved: bool
    reason: str
    event_id: str | None
    override: dict[str, object] | None = None


_ONE_TARGET: list[JsonValue] = [
    {"required": [one], "properties": {one: {"type": "string"}, other: {"type": "null"}}}
    for one, other in (("prediction_id", "customer_id"), ("customer_id", "prediction_id"))
]


class FeedbackRequest(BaseModel):
    """A delayed label: for one prediction (`prediction_id`) or a customer's recent predictions."""

    # "Exactly one of" in the schema too, so clients (and schemathesis) know what the validator wants.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _ONE_TARGET})
    prediction_id: str | None = Field(None, min_length=36, max_length=36, examples=["0192f1c2-..."])
    customer_id: str | None = Field(None, min_length=1, max_length=128)
    churned: bool
    observed_at: datetime | None = Field(None, description="When the outcome was observed (default: now).")

    @model_validator(mode="after")
    def _one_target(self) -> FeedbackRequest:
        if (self.prediction_id is None) == (self.customer_id is None):
            raise ValueError("give exactly one of prediction_id or customer_id")
        return self


class FeedbackBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[FeedbackRequest] = Field(min_length=1, max_length=10_000)


class FeedbackResponse(BaseModel):
    received: int
    joined: int = Field(description="Predictions newly labelled.")
    duplicates: int = Field(description="The same label again (idempotent).")
    conflicts: int = Field(description="A different label for an already labelled prediction (unchanged).")
    unmatched: int = Field(description="No prediction found for the id, or for the customer in the window.")
    erased: int = Field(description="Labels for erased customers (not joined).")


class PrivacyActionResponse(BaseModel):
    subject: str = Field(description="The customer's pseudonym (what the ledger holds).")
    event_id: str | None = None
    details: dict[str, object] = Field(default_factory=dict)


class KeyCreateRequest(BaseModel):
    """A new API key; the caller cannot grant scopes it does not hold itself (403)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$", examples=["retention-dashboard"]
    )
    scopes: list[Literal["predict", "admin", "audit"]] = Field(min_length=1, examples=[["predict"]])
    rate_limit: str | None = Field(
        None, pattern=r"^[1-9][0-9]{0,11}/(second|minute|hour|day)$", examples=["100/minute"]
    )
    signed: bool = False
    expires_in_days: float | None = Field(None, gt=0, le=3650)


class KeyCreated(BaseModel):
    key_id: str
    key: str = Field(description="Shown once: send it as X-API-Key.")
    signing_secret: str | None = Field(
        None, description="Shown once, for signed keys: HMAC key of X-Signature."
    )


class KeyInfo(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    rate_limit: str | None
    signed: bool
    created_at_us: int
    expires_at_us: int | None
    revoked_at_us: int | None
    created_by: str | None

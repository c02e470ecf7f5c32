"""Request and response models of the HTTP API (they feed the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    variants: list[str]
    slots: list[SlotModel]
    online_store: dict[str, object]

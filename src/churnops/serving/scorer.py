"""The prediction hot path, framework-free: decoded request -> features -> model slot -> response dict.

No pandas and no I/O here: features come from the in-process online store (or
an adapter with the same interface) and the request; scoring is the slot's
compiled model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from churnops.core.ledger import SERVED
from churnops.core.ledger_rows import Prediction
from churnops.core.spec import DatasetSpec
from churnops.errors import InvalidRequest, NotFound
from churnops.serving.features import SOURCE_DEFAULT
from churnops.serving.slots import ModelSlot

SOURCE_REQUEST = "request"
_SCALARS = (str, int, float, bool, type(None))


class FeatureRules:
    """Checks request feature overrides: known names only, numbers (or null) for numerical features."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.numerical = frozenset(spec.features.numerical)
        self.known = frozenset(spec.feature_columns)
        self.names = ", ".join(spec.feature_columns)

    def check(self, features: Mapping[str, Any], prefix: str = "features") -> None:
        for name, value in features.items():
            if name not in self.known:
                raise InvalidRequest(
                    f"{prefix}.{name}: unknown feature (known: {self.names})", f"{prefix}.{name}"
                )
            if not isinstance(value, _SCALARS):
                field, kind = f"{prefix}.{name}", type(value).__name__
                raise InvalidRequest(f"{field}: expected a string, number, bool or null, got {kind}", field)
            if name in self.numerical and value is not None and not _is_number(value):
                raise InvalidRequest(
                    f"{prefix}.{name}: expected a number or null, got {value!r}", f"{prefix}.{name}"
                )


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return not (isinstance(value, float) and math.isinf(value))
    return False


def resolve_features(
    customer_id: str, stored: Mapping[str, Any] | None, source: str, overrides: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any], str]:
    """The stored vector (`source` says from where), completed or overridden by the request.

    404 when the store has no such customer and the request gives no features. While the
    store is down, a never-seen customer is scored from the request's features or, with none,
    the default vector (source `default`).
    """
    if stored is None or source == SOURCE_DEFAULT:
        if overrides:
            return overrides, SOURCE_REQUEST
        if stored is None:
            raise NotFound(f"customer {customer_id!r} has no stored features and the request gave none")
        return stored, source
    if not overrides:
        return stored, source
    return {**stored, **overrides}, f"{source}+request"


def predict(
    slot: ModelSlot,
    stored: tuple[Mapping[str, Any] | None, str],
    rules: FeatureRules,
    customer_id: str,
    overrides: Mapping[str, Any] | None,
    request_id: str,
    prediction_id: str,
    row: np.ndarray | None = None,
) -> tuple[dict[str, Any], Mapping[str, Any], list[tuple[str, float]]]:
    """One prediction in the response shape of DESIGN.md, plus the vector it scored and its reasons
    (what the ledger records); `stored` is (vector, source) from the store. `row` is the feature
    buffer to use off the event loop (the slot's own one serves the loop, one request at a time)."""
    if overrides:
        rules.check(overrides)
    record, source = resolve_features(customer_id, stored[0], stored[1], overrides)
    probability, reasons = slot.score(record, row)
    response = {
        "customer_id": customer_id,
        "churn_probability": probability,
        "churn": probability >= slot.threshold,
        "threshold": slot.threshold,
        "model": {"name": slot.model_name, "version": slot.version, "variant": slot.variant},
        "reasons": [{"feature": name, "contribution": value} for name, value in reasons],
        "feature_source": source,
        "prediction_id": prediction_id,
        "request_id": request_id,
    }
    return response, record, reasons


def ledger_entry(
    slot: ModelSlot,
    result: dict[str, Any],
    record: Mapping[str, Any],
    reasons: list[tuple[str, float]],
    request_id: str,
    principal: str | None,
    now_ns: int,
    role: str = SERVED,
    experiment: str | None = None,
    bucket: int | None = None,
) -> Prediction:
    """What the ledger keeps of one answered prediction (sealed and chained off the hot path)."""
    return Prediction(
        result["prediction_id"],
        now_ns // 1000,
        request_id,
        result["customer_id"],
        principal,
        slot.model_name,
        slot.version,
        slot.variant,
        experiment,
        bucket,
        role,
        result["churn_probability"],
        result["churn"],
        slot.threshold,
        reasons,
        result["feature_source"],
        record,
    )

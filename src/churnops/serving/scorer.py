"""The prediction hot path, framework-free: decoded request -> features -> model slot -> response dict.

No pandas and no I/O here: features come from the in-process online store (or
an adapter with the same interface) and the request; scoring is the slot's
compiled model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from churnops.core.spec import DatasetSpec
from churnops.errors import InvalidRequest, NotFound
from churnops.io.online_store import OnlineStore
from churnops.serving.slots import ModelSlot

SOURCE_ONLINE = "online_store"
SOURCE_REQUEST = "request"
SOURCE_MERGED = "online_store+request"
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
    customer_id: str, overrides: Mapping[str, Any] | None, online: OnlineStore
) -> tuple[Mapping[str, Any], str]:
    """Stored vector, completed or overridden by the request; 404 when neither has anything."""
    stored = online.get(customer_id)
    if stored is None:
        if not overrides:
            raise NotFound(f"customer {customer_id!r} has no stored features and the request gave none")
        return overrides, SOURCE_REQUEST
    if not overrides:
        return stored, SOURCE_ONLINE
    return {**stored, **overrides}, SOURCE_MERGED


def predict(
    slot: ModelSlot,
    online: OnlineStore,
    rules: FeatureRules,
    customer_id: str,
    overrides: Mapping[str, Any] | None,
    request_id: str,
) -> dict[str, Any]:
    """One prediction in the response shape of DESIGN.md."""
    if overrides:
        rules.check(overrides)
    record, source = resolve_features(customer_id, overrides, online)
    probability, reasons = slot.score(record)
    return {
        "customer_id": customer_id,
        "churn_probability": probability,
        "churn": probability >= slot.threshold,
        "threshold": slot.threshold,
        "model": {"name": slot.model_name, "version": slot.version, "variant": slot.variant},
        "reasons": [{"feature": name, "contribution": value} for name, value in reasons],
        "feature_source": source,
        "request_id": request_id,
    }

"""/v1/predict and /v1/predict/batch: bytes in, bytes out, shared by the fast ASGI path and FastAPI.

Decoding uses msgspec Structs, which validate types as strictly as pydantic and
name the failing field, at a fraction of the cost; unknown fields are rejected.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from churnops.errors import InvalidRequest, NotFound, PayloadTooLarge
from churnops.serving import scorer
from churnops.serving.errors import classify, error_response

if TYPE_CHECKING:
    from churnops.serving.state import ServiceState


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: str
    # Values are checked by FeatureRules, whose messages name the feature (msgspec elides dict keys).
    features: dict[str, Any] | None = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[PredictRequest]


_PREDICT = msgspec.json.Decoder(PredictRequest)
_BATCH = msgspec.json.Decoder(BatchRequest)
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    if not body:
        raise InvalidRequest("request body is empty: send a JSON object", malformed=True)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        match = _AT.match(str(err))
        message, path = (match["message"], match["path"]) if match else (str(err), None)
        field = path.lstrip(".").replace("[", ".").replace("]", "") if path else None
        if message.startswith("Object contains unknown field"):
            message = "unknown field: " + message.split("`")[1]
            field = ".".join(filter(None, [field, message.split(": ")[1]]))
        raise InvalidRequest(f"{field or 'body'}: {message}", field or None) from err
    except msgspec.DecodeError as err:
        raise InvalidRequest(f"malformed JSON: {err}", malformed=True) from err


def _check_id(customer_id: str, field: str) -> None:
    if not customer_id or len(customer_id) > 128:
        raise InvalidRequest(f"{field}: must be 1 to 128 characters", field)


async def handle_predict(state: ServiceState, body: bytes, request_id: str) -> tuple[int, bytes]:
    """Decode, score, encode one prediction; every failure becomes an error body."""
    started = time.perf_counter()
    slot = None
    try:
        request = _decode(_PREDICT, body)
        _check_id(request.customer_id, "customer_id")
        stored = await state.features.get(request.customer_id)
        slot = state.champion()  # taken after the only await: the request finishes on this slot
        result = scorer.predict(slot, stored, state.rules, request.customer_id, request.features, request_id)
    except Exception as err:  # every failure is answered with its status and counted, never hidden
        _count(state, slot, started, err)
        return error_response(err, request_id)
    state.metrics.observe_prediction(
        slot.variant, slot.version, result["feature_source"], time.perf_counter() - started, "ok"
    )
    return 200, orjson.dumps(result)


async def handle_batch(state: ServiceState, body: bytes, request_id: str) -> tuple[int, bytes]:
    """Up to `max_batch_instances` predictions; an unknown customer gets an error entry in place."""
    started = time.perf_counter()
    try:
        instances = _decode(_BATCH, body).instances
        _check_batch(state, instances)
        stored = [await state.features.get(item.customer_id) for item in instances]
        slot = state.champion()  # one slot for the whole batch, taken after the reads: no mixed versions
        predictions = [
            _batch_item(state, slot, item, found, request_id)
            for item, found in zip(instances, stored, strict=True)
        ]
    except Exception as err:  # answered with its status, never a stack trace
        return error_response(err, request_id)
    elapsed = time.perf_counter() - started
    state.metrics.observe_prediction(slot.variant, slot.version, "batch", elapsed, "ok")
    return 200, orjson.dumps({"predictions": predictions, "request_id": request_id})


def _check_batch(state: ServiceState, instances: list[PredictRequest]) -> None:
    limit = state.settings.max_batch_instances
    if not instances:
        raise InvalidRequest("instances: must not be empty", "instances")
    if len(instances) > limit:
        raise PayloadTooLarge(f"instances: {len(instances)} given, at most {limit} per batch")
    for index, item in enumerate(instances):
        _check_id(item.customer_id, f"instances.{index}.customer_id")
        if item.features:
            state.rules.check(item.features, prefix=f"instances.{index}.features")


def _batch_item(
    state: ServiceState, slot: Any, item: PredictRequest, stored: tuple[Any, str], request_id: str
) -> dict[str, Any]:
    try:
        return scorer.predict(slot, stored, state.rules, item.customer_id, item.features, request_id)
    except NotFound as err:
        return {"customer_id": item.customer_id, "error": {"code": "not_found", "message": str(err)}}


def _count(state: ServiceState, slot: Any, started: float, err: BaseException) -> None:
    """Failed predictions are counted by their error code (outcome label)."""
    variant, version = (slot.variant, slot.version) if slot is not None else ("none", "none")
    state.metrics.observe_prediction(
        variant, version, "none", time.perf_counter() - started, classify(err)[1]
    )

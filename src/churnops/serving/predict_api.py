"""/v1/predict and /v1/predict/batch: bytes in, bytes out, shared by the fast ASGI path and FastAPI.

Decoding uses msgspec Structs, which validate types as strictly as pydantic and
name the failing field, at a fraction of the cost; unknown fields are rejected.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from churnops.core.ledger import SERVED
from churnops.core.ledger_rows import Prediction
from churnops.errors import AuditUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from churnops.serving import scorer
from churnops.serving.errors import classify, error_response

if TYPE_CHECKING:
    from churnops.serving.slots import ModelSlot
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


async def handle_predict(
    state: ServiceState, body: bytes, request_id: str, principal: str | None = None
) -> tuple[int, bytes]:
    """Decode, score, record, encode one prediction; every failure becomes an error body."""
    started = time.perf_counter()
    slot = None
    try:
        request = _decode(_PREDICT, body)
        _check_id(request.customer_id, "customer_id")
        stored = await state.features.get(request.customer_id)
        slot = state.champion()  # taken after the read: the request finishes on this slot
        monitor = state.monitor
        cpu = monitor.start() if monitor is not None else -1.0  # after the await: this request's CPU only
        now_ns = time.time_ns()
        result, record, reasons = scorer.predict(
            slot,
            stored,
            state.rules,
            request.customer_id,
            request.features,
            request_id,
            state.ids.next(now_ns),
        )
        if monitor is not None:
            monitor.observe(slot, record, result["churn_probability"], cpu)
        ledger = state.ledger
        if ledger is not None:
            entry = _entry(slot, result, record, reasons, request_id, principal, now_ns)
            if ledger.sync:
                await ledger.submit_durable(entry)
            else:
                ledger.submit(entry)
    except Exception as err:  # every failure is answered with its status and counted, never hidden
        _count(state, slot, started, err)
        return error_response(err, request_id)
    state.metrics.observe_prediction(
        slot.variant, slot.version, result["feature_source"], time.perf_counter() - started, "ok"
    )
    return 200, orjson.dumps(result)


def _entry(
    slot: ModelSlot,
    result: dict[str, Any],
    record: Mapping[str, Any],
    reasons: list[tuple[str, float]],
    request_id: str,
    principal: str | None,
    now_ns: int,
    role: str = SERVED,
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
        None,
        None,
        role,
        result["churn_probability"],
        result["churn"],
        slot.threshold,
        reasons,
        result["feature_source"],
        record,
    )


async def handle_batch(
    state: ServiceState, body: bytes, request_id: str, principal: str | None = None
) -> tuple[int, bytes]:
    """Up to `max_batch_instances` predictions; an unknown customer gets an error entry in place.
    Each answered instance is one ledger record and one counted prediction."""
    started = time.perf_counter()
    try:
        instances = _decode(_BATCH, body).instances
        _check_batch(state, instances)
        stored = [await state.features.get(item.customer_id) for item in instances]
        slot = state.champion()  # one slot for the whole batch, taken after the reads: no mixed versions
        monitor = state.monitor
        cpu = monitor.start() if monitor is not None else -1.0
        now_ns = time.time_ns()
        scored = [
            _batch_item(state, slot, item, found, request_id, now_ns)
            for item, found in zip(instances, stored, strict=True)
        ]
        if monitor is not None:
            answered = [(rec, res["churn_probability"]) for res, rec, _ in scored if rec is not None]
            monitor.observe_batch(slot, answered, cpu)
        entries = [
            _entry(slot, result, record, reasons, request_id, principal, now_ns)
            for result, record, reasons in scored
            if record is not None
        ]
        await _record_all(state, entries)
    except Exception as err:  # answered with its status, never a stack trace
        return error_response(err, request_id)
    elapsed = time.perf_counter() - started
    for result, record, _ in scored:
        if record is not None:
            state.metrics.observe_prediction(
                slot.variant, slot.version, result["feature_source"], elapsed, "ok"
            )
    predictions = [result for result, _, _ in scored]
    return 200, orjson.dumps({"predictions": predictions, "request_id": request_id})


async def _record_all(state: ServiceState, entries: list[Prediction]) -> None:
    """Queue every record of a batch, or none: a batch is refused whole when the ledger is full."""
    ledger = state.ledger
    if ledger is None or not entries:
        return
    if ledger.depth() + len(entries) > ledger.queue_size:
        ledger.counters.outcomes["refused"] += len(entries)
        raise AuditUnavailable("the prediction ledger cannot take this batch now: try again shortly")
    if ledger.sync:
        await asyncio.gather(*(ledger.submit_durable(entry) for entry in entries))
        return
    for entry in entries:
        ledger.submit(entry)


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
    state: ServiceState,
    slot: ModelSlot,
    item: PredictRequest,
    stored: tuple[Any, str],
    request_id: str,
    now_ns: int,
) -> tuple[dict[str, Any], Mapping[str, Any] | None, list[tuple[str, float]]]:
    try:
        return scorer.predict(
            slot, stored, state.rules, item.customer_id, item.features, request_id, state.ids.next(now_ns)
        )
    except NotFound as err:
        return (
            {"customer_id": item.customer_id, "error": {"code": "not_found", "message": str(err)}},
            None,
            [],
        )


def _count(state: ServiceState, slot: Any, started: float, err: BaseException) -> None:
    """Failed predictions are counted by their error code (outcome label)."""
    variant, version = (slot.variant, slot.version) if slot is not None else ("none", "none")
    state.metrics.observe_prediction(
        variant, version, "none", time.perf_counter() - started, classify(err)[1]
    )

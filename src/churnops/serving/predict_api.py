"""/v1/predict and /v1/predict/batch: bytes in, bytes out, shared by the fast ASGI path and FastAPI.

Decoding uses msgspec Structs, which validate types as strictly as pydantic and
name the failing field, at a fraction of the cost; unknown fields are rejected.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from churnops.core.ledger import SERVED
from churnops.core.ledger_rows import Prediction
from churnops.errors import AuditUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from churnops.serving import scorer
from churnops.serving.errors import classify, error_response
from churnops.serving.experiment_routing import ShadowJob
from churnops.serving.scorer import ledger_entry

if TYPE_CHECKING:
    from churnops.serving.features import FeatureSource
    from churnops.serving.scorer import FeatureRules
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
    """Decode, route, score, record, encode one prediction; every failure becomes an error body."""
    started = time.perf_counter()
    slot = None
    try:
        request = _decode(_PREDICT, body)
        customer = request.customer_id
        _check_id(customer, "customer_id")
        experiment = state.experiment  # the snapshot this request routes by, start to end
        if experiment is None:
            features, rules, assignment = state.features, state.rules, None
            stored = await features.get(customer)
            slot = state.champion()  # taken after the read: the request finishes on this slot
        else:
            assignment = experiment.assigner.assign(customer)
            route = experiment.arms[assignment.arm]
            features, rules, slot = route.features, route.rules, route.slot
            stored = await features.get(customer)
        monitor = state.monitor
        cpu = monitor.start() if monitor is not None else -1.0  # after the await: this request's CPU only
        now_ns = time.time_ns()
        prediction_id = state.ids.next(now_ns)
        result, record, reasons = scorer.predict(
            slot, stored, rules, customer, request.features, request_id, prediction_id
        )
        if monitor is not None:
            monitor.observe(slot, record, result["churn_probability"], cpu)
        ledger = state.ledger
        if ledger is not None:
            name = experiment.name if experiment is not None else None
            bucket = assignment.bucket if assignment is not None else None
            entry = ledger_entry(
                slot, result, record, reasons, request_id, principal, now_ns, SERVED, name, bucket
            )
            if ledger.sync:
                await ledger.submit_durable(entry)
            else:
                ledger.submit(entry)
        if experiment is not None and assignment is not None:
            state.metrics.observe_assignment(experiment.name, assignment.arm)
            shadows = experiment.assigner.shadows_for(assignment.draw)
            if shadows:
                job = ShadowJob(
                    experiment,
                    shadows,
                    customer,
                    request.features,
                    stored,
                    features,
                    request_id,
                    principal,
                    assignment.bucket,
                )
                state.shadows.schedule(state, job)
    except Exception as err:  # every failure is answered with its status and counted, never hidden
        _count(state, slot, started, err)
        return error_response(err, request_id)
    state.metrics.observe_prediction(
        slot.variant, slot.version, result["feature_source"], time.perf_counter() - started, "ok"
    )
    return 200, orjson.dumps(result)


@dataclass(frozen=True)
class _Choice:
    """Where one batch instance is read and scored."""

    features: FeatureSource
    rules: FeatureRules
    slot: ModelSlot | None  # None: the champion, taken once after every read
    experiment: str | None = None
    arm: str | None = None
    bucket: int | None = None


Scored = tuple[dict[str, Any], Mapping[str, Any] | None, list[tuple[str, float]]]


async def handle_batch(
    state: ServiceState, body: bytes, request_id: str, principal: str | None = None
) -> tuple[int, bytes]:
    """Up to `max_batch_instances` predictions; an unknown customer gets an error entry in place.

    The vectors come in one read per feature source (MGET on Redis), the scoring runs in a worker
    thread (single predictions keep being answered meanwhile), and each answered instance is one
    ledger record and one counted prediction, routed by the experiment like a single one."""
    started = time.perf_counter()
    try:
        instances = _decode(_BATCH, body).instances
        _check_batch(state, instances)
        choices = _choose(state, instances)
        stored = await _read_all(choices, instances)
        champion = state.champion()  # one champion for the whole batch, taken after the reads
        monitor = state.monitor
        now_ns = time.time_ns()
        cpu = monitor.start() if monitor is not None else -1.0
        scored = await asyncio.to_thread(
            _score_all, state, champion, choices, instances, stored, request_id, now_ns
        )
        slots = [choice.slot or champion for choice in choices]
        if monitor is not None:
            for slot, group in _by_slot(slots, scored):
                answered = [(rec, res["churn_probability"]) for res, rec, _ in group if rec is not None]
                monitor.observe_batch(slot, answered, cpu)
        entries = [
            ledger_entry(
                slot, result, record, reasons, request_id, principal, now_ns, SERVED, c.experiment, c.bucket
            )
            for slot, c, (result, record, reasons) in zip(slots, choices, scored, strict=True)
            if record is not None
        ]
        await _record_all(state, entries)
    except Exception as err:  # answered with its status, never a stack trace
        return error_response(err, request_id)
    elapsed = time.perf_counter() - started
    for slot, choice, (result, record, _) in zip(slots, choices, scored, strict=True):
        if record is not None:
            state.metrics.observe_prediction(
                slot.variant, slot.version, result["feature_source"], elapsed, "ok"
            )
            if choice.arm is not None:
                state.metrics.observe_assignment(str(choice.experiment), choice.arm)
    predictions = [result for result, _, _ in scored]
    return 200, orjson.dumps({"predictions": predictions, "request_id": request_id})


def _choose(state: ServiceState, instances: list[PredictRequest]) -> list[_Choice]:
    experiment = state.experiment
    if experiment is None:
        plain = _Choice(state.features, state.rules, None)
        return [plain] * len(instances)
    choices = []
    for item in instances:
        assignment = experiment.assigner.assign(item.customer_id)
        route = experiment.arms[assignment.arm]
        choices.append(
            _Choice(
                route.features, route.rules, route.slot, experiment.name, assignment.arm, assignment.bucket
            )
        )
    return choices


async def _read_all(choices: list[_Choice], instances: list[PredictRequest]) -> list[tuple[Any, str]]:
    """One read per feature source for all its instances, results in the instances' order."""
    found: list[tuple[Any, str] | None] = [None] * len(instances)
    groups: dict[int, list[int]] = {}
    for index, choice in enumerate(choices):
        groups.setdefault(id(choice.features), []).append(index)
    for indices in groups.values():
        source = choices[indices[0]].features
        vectors = await source.get_many([instances[i].customer_id for i in indices])
        for index, vector in zip(indices, vectors, strict=True):
            found[index] = vector
    return [item if item is not None else (None, "online_store") for item in found]


def _score_all(
    state: ServiceState,
    champion: ModelSlot,
    choices: list[_Choice],
    instances: list[PredictRequest],
    stored: list[tuple[Any, str]],
    request_id: str,
    now_ns: int,
) -> list[Scored]:
    """Runs in a worker thread: its own feature rows, so it never races the event loop's scoring."""
    rows: dict[int, Any] = {}
    scored: list[Scored] = []
    for choice, item, found in zip(choices, instances, stored, strict=True):
        slot = choice.slot or champion
        row = rows.get(id(slot))
        if row is None:
            row = rows[id(slot)] = slot.new_row()
        prediction_id = state.ids.next(now_ns)
        try:
            scored.append(
                scorer.predict(
                    slot, found, choice.rules, item.customer_id, item.features, request_id, prediction_id, row
                )
            )
        except NotFound as err:
            error = {"code": "not_found", "message": str(err)}
            scored.append(({"customer_id": item.customer_id, "error": error}, None, []))
    return scored


def _by_slot(slots: list[ModelSlot], scored: list[Scored]) -> list[tuple[ModelSlot, list[Scored]]]:
    """Answered instances grouped by the slot that scored them (slots are compared by identity)."""
    groups: dict[int, tuple[ModelSlot, list[Scored]]] = {}
    for slot, item in zip(slots, scored, strict=True):
        if item[1] is not None:
            groups.setdefault(id(slot), (slot, []))[1].append(item)
    return list(groups.values())


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


def _count(state: ServiceState, slot: Any, started: float, err: BaseException) -> None:
    """Failed predictions are counted by their error code (outcome label)."""
    variant, version = (slot.variant, slot.version) if slot is not None else ("none", "none")
    state.metrics.observe_prediction(
        variant, version, "none", time.perf_counter() - started, classify(err)[1]
    )

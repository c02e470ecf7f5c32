"""Monitoring reports from the shared stores: drift, performance and cost, each per variant.

The service's workers write drift counts and measured usage to the monitor store every few
seconds; the ledger holds every prediction and its label once it arrives. These functions read
them back for one window and judge them with the pure domain (core.drift, core.performance,
core.cost). The CLI (`churnops monitor ...`), the HTTP routes (`/v1/monitoring/...`), the
service's gauges and `monitor run` all call the same functions, so they never disagree.

Every answer is a JSON-ready dict with a `status` and a one-line `message`; what cannot be
judged says so ("no_data", "not_judged", "no_profile", "not_configured") instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.core.cost import CostReport, WorkerUsage, cost_anomaly, cost_report
from churnops.core.drift import drift_report
from churnops.core.drift_accumulator import decode_counts
from churnops.core.drift_profile import ReferenceProfile
from churnops.core.params import Params
from churnops.core.performance import LabelledPredictions, performance_report
from churnops.core.windows import Window, check_name, json_ready, parse_window
from churnops.errors import ConfigError
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.monitor_store import MonitorStore, SlotSeen, UsageRow
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings

logger = logging.getLogger(__name__)

KINDS = ("drift", "performance", "cost")
DEFAULT_WINDOWS = {"drift": "1h", "performance": "60d", "cost": "1h"}
TRAILING_WINDOWS = 24  # the cost anomaly's baseline: the median of this many earlier windows
# Statuses that mean "nothing to judge", worst last among themselves; judged ones rank above.
_RANK = {"no_data": 0, "no_profile": 1, "not_judged": 2, "ok": 3, "warn": 4, "alert": 5}


def no_profile_message(version: str) -> str:
    return (
        f"model version {version} has no reference profile: run `churnops monitor profile {version}` "
        "(from the data it was trained on), or `churnops pipeline run` to train a version that has one"
    )


@dataclass
class Stores:
    """The monitor store and the ledger's labels on one SQL store (the worker's own, or a CLI's)."""

    monitor: MonitorStore
    feedback: FeedbackStore

    @classmethod
    def on(cls, store: SqlStore) -> Stores:
        return cls(MonitorStore(store), FeedbackStore(LedgerStore(store)))


@contextlib.contextmanager
def open_stores(settings: Settings) -> Iterator[Stores]:
    store = SqlStore(settings.sql_store_url)
    try:
        yield Stores.on(store)
    finally:
        store.close()


def window_of(kind: str, text: str | None) -> Window:
    return parse_window(text or DEFAULT_WINDOWS[kind])


# -- drift ---------------------------------------------------------------------------------


def drift(
    store: MonitorStore,
    params: Params,
    window: Window,
    *,
    variant: str | None = None,
    metric: str | None = None,
    now_us: int | None = None,
) -> dict[str, Any]:
    """Drift of the newest model version of each variant over `window` (see the module docstring)."""
    if metric is not None:
        check_name(metric, ("psi", "js_distance"), "drift statistic", "metric")
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    since = now_us - window.seconds * 1_000_000 if window.seconds is not None else None
    current = _current_slots(store.slots(since), variant)
    answers = [_slot_drift(store, params, slot, window, since, metric) for slot in current]
    if not answers:
        where = f" for variant {variant!r}" if variant else ""
        message = f"not enough data: no predictions{where} in the {window.describe()}"
        return {"status": "no_data", "message": message, "window": window.describe(), "variants": []}
    worst = max(answers, key=lambda a: _RANK[a["status"]])
    message = "; ".join(f"{a['variant']} v{a['model_version']}: {a['message']}" for a in answers)
    return {"status": worst["status"], "message": message, "window": window.describe(), "variants": answers}


def _current_slots(seen: list[SlotSeen], variant: str | None) -> list[SlotSeen]:
    """Per variant, the version (and profile) that flushed last: the one serving now."""
    newest: dict[str, SlotSeen] = {}
    for slot in seen:  # newest first
        if (variant is None or slot.variant == variant) and slot.variant not in newest:
            newest[slot.variant] = slot
    return sorted(newest.values(), key=lambda s: s.variant)


def _slot_drift(
    store: MonitorStore, params: Params, slot: SlotSeen, window: Window, since: int | None, metric: str | None
) -> dict[str, Any]:
    head = {"variant": slot.variant, "model_name": slot.model_name, "model_version": slot.model_version}
    if slot.fingerprint is None:
        return head | {"status": "no_profile", "message": no_profile_message(slot.model_version)}
    stored = store.profile(slot.fingerprint)
    if stored is None:
        message = f"reference profile {slot.fingerprint} is not in the monitor store (written at load)"
        return head | {"status": "no_profile", "message": message}
    profile = ReferenceProfile.from_dict(stored)
    counts = _window_counts(store, slot, profile, window, since)
    report = drift_report(profile, counts, params.monitoring.drift)
    body = report.to_dict()
    if metric is not None:
        body["statistic"] = {"name": metric, "values": json_ready(report.statistic(metric))}
    return head | {
        "fingerprint": slot.fingerprint,
        "status": report.status,
        "message": report.message,
        "report": body,
    }


def _window_counts(
    store: MonitorStore, slot: SlotSeen, profile: ReferenceProfile, window: Window, since: int | None
) -> np.ndarray:
    size = profile.layout().size
    total = np.zeros(size, dtype=np.int64)
    rows = store.drift_rows(slot, since)
    with contextlib.closing(rows):
        for row in rows:
            if row.counts is not None:
                total += decode_counts(row.counts, size)
            if window.predictions is not None and total[0] >= window.predictions:
                break
    return total


# -- performance -------------------------------------------------------------------------------


def performance(
    feedback: FeedbackStore,
    params: Params,
    window: Window,
    *,
    metric: str | None = None,
    kind: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Realised (labelled, per cohort, with CIs) and estimated performance of every version and variant."""
    now = now if now is not None else time.time()
    predictions = _scored(feedback, window, now)
    report = performance_report(predictions, now, params.monitoring.performance, params.business)
    body: dict[str, Any] = report.to_dict()
    status = "no_data" if not report.cohorts else "ok"
    if metric is not None or kind is not None:
        rows = report.metric(metric or "roc_auc", kind or "realised")  # InvalidRequest on unknown names
        body["series"] = json_ready(
            [{"model_version": v, "variant": a, "cohort": d, "value": x} for v, a, d, x in rows]
        )
    gate = params.monitoring.gate.min_roc_auc
    latest = latest_performance(body)
    below = [
        f"{variant} {kind_} ROC AUC {values['roc_auc']:.3f} < gate {gate}"
        for variant, kinds in latest.items()
        for kind_, values in kinds.items()
        if values.get("roc_auc") is not None and values["roc_auc"] < gate
    ]
    if below:
        status = "alert"
    message = "; ".join(below) if below else report.message
    if status == "no_data":
        message = f"not enough data: no predictions in the {window.describe()}"
    return body | {
        "status": status,
        "message": message,
        "window": window.describe(),
        "gate": {"min_roc_auc": gate},
        "latest": latest,
    }


def _scored(feedback: FeedbackStore, window: Window, now: float) -> LabelledPredictions:
    if window.seconds is not None:
        since = int((now - window.seconds) * 1e6)
        chunks = list(feedback.scores(since, int(now * 1e6) + 1))
    else:
        chunks = list(feedback.scores(latest=window.predictions))
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if frame.empty:
        return LabelledPredictions.of(probability=[], predicted_at=[], threshold=0.5)
    churned = frame["churned"].astype("float64")  # None -> NaN: no label yet
    return LabelledPredictions.of(
        probability=frame["probability"].to_numpy(dtype=np.float64),
        predicted_at=frame["predicted_at_us"].to_numpy(dtype=np.float64) / 1e6,
        label=churned.to_numpy(),
        labelled_at=frame["received_at_us"].astype("float64").to_numpy() / 1e6,
        decision=frame["decision"].astype(bool).to_numpy(),
        version=frame["model_version"].astype(str).to_numpy(),
        variant=frame["variant"].astype(str).to_numpy(),
    )


def latest_performance(body: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant (its newest version): the realised metrics of the newest cohort that has them
    and the estimated metrics of the newest cohort; what the gauges and the gate read."""
    cohorts = body.get("cohorts", [])
    newest_version: dict[str, tuple[float, str]] = {}
    for c in cohorts:
        key = (float(c["start"]), str(c["version"]))
        newest_version[c["variant"]] = max(newest_version.get(c["variant"], key), key)
    latest: dict[str, dict[str, dict[str, float]]] = {}
    for c in sorted(cohorts, key=lambda c: c["start"]):
        if c["version"] != newest_version[c["variant"]][1]:
            continue
        slot = latest.setdefault(c["variant"], {})
        slot["estimated"] = {k: v for k, v in c["estimated"].items() if v is not None}
        if c["realised"]:
            slot["realised"] = {k: e["value"] for k, e in c["realised"].items() if e["value"] is not None}
    return latest


# -- cost --------------------------------------------------------------------------------------


def cost(store: MonitorStore, params: Params, window: Window, *, now_us: int | None = None) -> dict[str, Any]:
    """Measured cost per 1,000 predictions per variant over `window`, and its anomaly judgement."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    prices = params.monitoring.cost.prices
    windows = _usage_windows(store, window, now_us)
    current = [WorkerUsage.from_dict(row.usage) for row in windows[0]] if windows else []
    if prices is None:
        measured = sum(sum(v.predictions for v in u.variants.values()) for u in current)
        try:
            cost_report(current, None)
        except ConfigError as err:
            return {
                "status": "not_configured",
                "message": str(err),
                "window": window.describe(),
                "measured_predictions": measured,
                "variants": [],
            }
    report = cost_report(current, prices)
    trailing = [cost_report([WorkerUsage.from_dict(r.usage) for r in rows], prices) for rows in windows[1:]]
    anomalies = {v.variant: _anomaly(v.variant, v.per_1000_usd, trailing, params) for v in report.variants}
    status = "no_data" if report.status == "no_data" else "ok"
    if any(a["status"] == "anomaly" for a in anomalies.values()):
        status = "alert"
    body: dict[str, Any] = report.to_dict()
    return body | {"status": status, "window": window.describe(), "anomaly": anomalies}


def _anomaly(variant: str, current: float, trailing: list[CostReport], params: Params) -> dict[str, Any]:
    history = [r.per_1000().get(variant, math.nan) for r in trailing]
    result: dict[str, Any] = json_ready(cost_anomaly(current, history, params.monitoring.cost).__dict__)
    return result


def _usage_windows(store: MonitorStore, window: Window, now_us: int) -> list[list[UsageRow]]:
    """The current window's usage rows, then (duration windows) up to TRAILING_WINDOWS earlier ones."""
    if window.predictions is not None:
        rows: list[UsageRow] = []
        total = 0
        usage = store.usage_rows()
        with contextlib.closing(usage):
            for row in usage:
                rows.append(row)
                total += row.predictions
                if total >= window.predictions:
                    break
        return [rows]
    assert window.seconds is not None
    length = window.seconds * 1_000_000
    since = now_us - length * (TRAILING_WINDOWS + 1)
    windows: list[list[UsageRow]] = [[] for _ in range(TRAILING_WINDOWS + 1)]
    usage = store.usage_rows(since, now_us)
    with contextlib.closing(usage):
        for row in usage:
            windows[min((now_us - row.end_us) // length, TRAILING_WINDOWS)].append(row)
    return windows


# -- everything at once: the service's gauges and `monitor run` --------------------------------


def shared_performance(
    stores: Stores, params: Params, max_age_s: float, now_us: int | None = None
) -> dict[str, Any]:
    """The performance report over the default window, computed at most once per `max_age_s` by all
    workers and replicas together: a report stored less than `max_age_s` ago (by another worker, or
    `monitor run`) is reused; otherwise this one computes it and stores it for the others."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    latest = stores.monitor.reports("performance", limit=1)
    if latest and now_us - latest[0]["at_us"] < max_age_s * 1e6:
        body: dict[str, Any] = latest[0]["body"]
        return body
    body = performance(stores.feedback, params, window_of("performance", None), now=now_us / 1e6)
    stores.monitor.write_report("performance", str(body["status"]), body, now_us)
    return body


def compute(
    stores: Stores, params: Params, kinds: tuple[str, ...] = KINDS, now_us: int | None = None
) -> dict[str, dict[str, Any]]:
    """Each report over its default window; a report that fails is logged and left out."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        window = window_of(kind, None)
        try:
            if kind == "drift":
                out[kind] = drift(stores.monitor, params, window, now_us=now_us)
            elif kind == "performance":
                out[kind] = performance(stores.feedback, params, window, now=now_us / 1e6)
            else:
                out[kind] = cost(stores.monitor, params, window, now_us=now_us)
        except Exception as err:  # one failing report must not hide the others
            logger.warning("monitoring: %s report failed (%s: %s)", kind, type(err).__name__, err)
    return out


def gauges(reports: dict[str, dict[str, Any]], params: Params) -> dict[str, list[list[Any]]]:
    """The Prometheus gauges the reports give: [labels..., value] rows per family (see serving.metrics)."""
    out: dict[str, list[list[Any]]] = {
        "feature_drift_psi": [],
        "prediction_drift_psi": [],
        "drift_drifted_features_ratio": [],
        "drift_window_predictions": [],
        "model_performance": [],
        "cost_per_1000_predictions_usd": [],
        "model_performance_gate": [["roc_auc", params.monitoring.gate.min_roc_auc]],
    }
    for answer in reports.get("drift", {}).get("variants", []):
        report = answer.get("report")
        if report is None:
            continue
        variant = answer["variant"]
        out["drift_window_predictions"].append([variant, report["n"]])
        if not report["judged"]:
            continue  # below the minimum window nothing is judged: no gauge, no false alarm
        out["feature_drift_psi"] += [[f["feature"], variant, f["psi"]] for f in report["features"]]
        out["prediction_drift_psi"].append([variant, report["prediction_psi"]])
        out["drift_drifted_features_ratio"].append([variant, report["drifted_share"]])
    for variant, kinds in reports.get("performance", {}).get("latest", {}).items():
        for kind, values in kinds.items():
            out["model_performance"] += [[metric, variant, kind, v] for metric, v in sorted(values.items())]
    for v in reports.get("cost", {}).get("variants", []):
        if v.get("per_1000_usd") is not None:
            out["cost_per_1000_predictions_usd"].append([v["variant"], v["per_1000_usd"]])
    return {k: [row for row in rows if _finite(row[-1])] for k, rows in out.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def housekeep(stores: Stores, params: Params, now_us: int | None = None) -> int:
    """Fold drift rows older than two hours into hourly rows and purge past the retention of params.yaml
    (safe from any number of processes at once); returns the rows folded."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    folded = stores.monitor.rollup(now_us - 2 * 3_600_000_000, _merge_bytes)
    stores.monitor.purge(now_us - params.monitoring.retention_days * 86_400_000_000)
    return folded


def run_once(stores: Stores, params: Params, now_us: int | None = None) -> dict[str, dict[str, Any]]:
    """One `monitor run` tick: roll old drift rows up, purge past retention, compute, store the reports."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    housekeep(stores, params, now_us)
    reports = compute(stores, params, now_us=now_us)
    for kind, body in reports.items():
        stores.monitor.write_report(kind, str(body.get("status")), body, now_us)
    return reports


def _merge_bytes(vectors: list[bytes]) -> bytes:
    size = len(vectors[0]) // 8
    total = np.zeros(size, dtype=np.int64)
    for data in vectors:
        total += decode_counts(data, size)
    return total.astype("<i8").tobytes()

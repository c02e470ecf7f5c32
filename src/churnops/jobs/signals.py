"""What the lifecycle loop watches, behind one small interface: `SignalSource.signals(version, since)`.

`ServiceSignals` measures it with what the service records:

- drift against the version's reference profile (core.drift: PSI per feature and of the
  predictions): from the monitoring jobs (jobs.monitor.drift, on the bin counts the workers fold
  into the monitor store) when they hold the version's window; otherwise — monitoring off, or the
  version not flushed yet — from the ledger: its served predictions, their feature vectors opened
  with the data keys, binned on the profile;
- the AUC the probabilities imply (CBPE, as monitoring's estimated AUC) from the ledger's served
  predictions, and the realised AUC from their feedback labels;
- the service's `/metrics` (Prometheus text): the version's error rate (server-side outcomes of
  `predictions_total`) and latency p95 (from `inference_latency_seconds`), summed over workers.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from churnops.core import envelope
from churnops.core.auc import roc_auc
from churnops.core.drift import drift_report
from churnops.core.drift_profile import ReferenceProfile, frame_counts
from churnops.core.lifecycle import Signals
from churnops.core.monitoring_params import DriftParams
from churnops.core.performance_stats import expected_auc
from churnops.core.windows import Window
from churnops.io.feedback_store import FeedbackStore
from churnops.io.ledger_store import LedgerStore
from churnops.io.lifecycle_store import served_predictions, wrapped_keys
from churnops.io.registry import CHAMPION
from churnops.jobs.promote import Lifecycle
from churnops.jobs.version_files import reference_profile

logger = logging.getLogger(__name__)

SERVER_ERRORS = frozenset({"internal_error", "not_ready", "audit_unavailable"})
SCRAPE_TIMEOUT_S = 3.0


class SignalSource(Protocol):
    """The champion's (or a baking version's) figures since a time."""

    def signals(self, version: str, since_us: int, min_window: int, *, shadow: bool = False) -> Signals:
        """`shadow`: the version's shadow scores (a shadow trial) instead of its served answers."""
        ...


@dataclass
class ServiceSignals:
    """Signals from the ledger and the service's /metrics (see the module docstring)."""

    lc: Lifecycle
    model: str
    metrics_url: str | None

    def signals(self, version: str, since_us: int, min_window: int, *, shadow: bool = False) -> Signals:
        notes: list[str] = []
        rows = served_predictions(self.lc.sql, self.model, version, since_us, shadow=shadow)
        proba = np.asarray([r["probability"] for r in rows], dtype=np.float64)
        drift = self._drift(version, rows, proba, min_window, notes, shadow)
        labels, realised = self._realised(version, since_us, shadow)
        errors, p95 = self._operational(version, notes)
        return Signals(
            version=version,
            predictions=len(rows),
            error_rate=errors,
            latency_p95_ms=p95,
            drift_status=drift.get("status"),
            drift_message=drift.get("message", ""),
            prediction_psi=drift.get("prediction_psi"),
            labels=labels,
            auc_realised=realised,
            auc_estimated=expected_auc(proba) if proba.size else None,
            notes=tuple(notes),
        )

    def _drift(
        self,
        version: str,
        rows: list[dict[str, Any]],
        proba: Any,
        min_window: int,
        notes: list[str],
        shadow: bool = False,
    ) -> dict[str, Any]:
        if not rows:
            return {"status": "no_data", "message": "no served predictions in the window"}
        # The monitor store folds the champion slot's traffic; shadow scores only the ledger holds.
        monitored = None if shadow else self._monitored_drift(version, int(rows[-1]["at_us"]), min_window)
        if monitored is not None:
            return monitored
        notes.append("drift from the ledger (the monitor store holds no window of this version)")
        profile = reference_profile(self.lc.registry, self.model, version)
        if profile is None:
            notes.append(f"v{version} has no reference profile: drift not judged")
            return {"status": "no_profile", "message": f"v{version} has no reference profile"}
        frame, kept = open_vectors(self.lc, rows)
        if len(frame) < len(rows):
            notes.append(f"{len(rows) - len(frame)} vectors unreadable (erased or shredded): left out")
        if len(frame) == 0:
            return {"status": "no_data", "message": "no readable feature vector in the window"}
        drift = self._drift_params(min_window)
        return judge_drift(profile, frame.reindex(columns=profile.feature_names), proba[kept], drift)

    def _drift_params(self, min_window: int) -> DriftParams:
        return self.lc.params.monitoring.drift.model_copy(update={"min_window": min_window})

    def _monitored_drift(self, version: str, since_us: int, min_window: int) -> dict[str, Any] | None:
        """The monitoring job's judgement of the champion slot since `since_us`, if it is this version's."""
        from churnops.io.monitor_store import MonitorStore
        from churnops.jobs.monitor import drift

        monitoring = self.lc.params.monitoring.model_copy(update={"drift": self._drift_params(min_window)})
        params = self.lc.params.model_copy(update={"monitoring": monitoring})
        window = Window(seconds=max(1, int(time.time() - since_us / 1e6) + 1))
        report = drift(MonitorStore(self.lc.sql), params, window, variant=CHAMPION)
        for slot in report.get("variants", []):
            mine = slot.get("model_name") == self.model and slot.get("model_version") == version
            if mine and slot["status"] not in ("no_data", "no_profile"):
                psi = (slot.get("report") or {}).get("prediction_psi")
                return {"status": slot["status"], "message": slot["message"], "prediction_psi": psi}
        return None

    def _realised(self, version: str, since_us: int, shadow: bool = False) -> tuple[int, float | None]:
        labelled = FeedbackStore(LedgerStore(self.lc.sql)).labelled(since_us)
        mine = labelled[(labelled["model_version"] == version) & (labelled["model_name"] == self.model)]
        mine = mine[(mine["role"] == "shadow") if shadow else (mine["role"] != "shadow")]
        y = mine["churned"].astype(int).to_numpy()
        if len(mine) == 0 or y.min() == y.max():
            return len(mine), None
        return len(mine), roc_auc(y, mine["probability"].to_numpy(dtype=np.float64))

    def _operational(self, version: str, notes: list[str]) -> tuple[float | None, float | None]:
        if self.metrics_url is None:
            return None, None
        try:
            text = scrape(self.metrics_url)
        except OSError as err:
            notes.append(f"service metrics unreadable at {self.metrics_url}: {err}")
            return None, None
        return error_rate(text, version), latency_quantile(text, version, 0.95)


def judge_drift(
    profile: ReferenceProfile, frame: pd.DataFrame, proba: Any, params: DriftParams
) -> dict[str, Any]:
    report = drift_report(profile, frame_counts(profile, frame, proba), params)
    return {
        "status": report.status,
        "message": report.message,
        "prediction_psi": report.prediction_psi if math.isfinite(report.prediction_psi) else None,
        "n": report.n,
    }


def open_vectors(lc: Lifecycle, rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature vectors of ledger rows, opened with each customer's data key (erased: skipped);
    returns them and a mask of the rows they came from."""
    keys = wrapped_keys(lc.sql, sorted({str(r["subject"]) for r in rows}))
    wrapping = lc.keys.wrapping_key
    opened: dict[tuple[str, int, str], AESGCM] = {}
    records, kept = [], np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        index = (str(row["subject"]), int(row["key_epoch"] or 0), str(row["writer_id"]))
        wrapped = keys.get(index)
        if wrapped is None or row["payload"] is None:
            continue
        aad = envelope.associated_data(index[0], index[1])
        try:
            if index not in opened:
                opened[index] = AESGCM(envelope.unwrap_key(wrapping, wrapped, aad))
            records.append(orjson.loads(envelope.open_sealed(opened[index], bytes(row["payload"]), aad)))
        except InvalidTag:
            continue
        kept[i] = True
    return pd.DataFrame.from_records(records), kept


def scrape(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url!r}")
    # The scheme is checked just above (lifecycle.service_url is validated as http(s) too).
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310  # nosec B310
        return str(response.read().decode())


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of one metric in Prometheus text."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, _, value = line[len(name) + 1 :].rpartition("} ")
        labels = dict(_label(part) for part in labels_text.split(",") if "=" in part)
        found.append((labels, float(value)))
    return found


def _label(part: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    return key.strip(), value.strip().strip('"')


def error_rate(text: str, version: str) -> float | None:
    """Server-side failures among the version's predictions (client errors such as 404 excluded)."""
    samples = [
        (lab, v) for lab, v in _samples(text, "predictions_total") if lab.get("model_version") == version
    ]
    total = sum(v for _, v in samples)
    if total == 0:
        return None
    return sum(v for lab, v in samples if lab.get("outcome") in SERVER_ERRORS) / total


def latency_quantile(text: str, version: str, q: float) -> float | None:
    """A quantile (ms) of the version's latency histogram, linearly interpolated within its bucket."""
    buckets: dict[float, float] = {}
    for labels, value in _samples(text, "inference_latency_seconds_bucket"):
        if labels.get("model_version") == version:
            bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return histogram_quantile(buckets, q)


def histogram_quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile on cumulative bucket counts keyed by upper bound (seconds), in ms."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower * 1e3  # beyond the last finite bucket: its bound is the best answer
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (bound - lower) * share) * 1e3
        lower, below = bound, count
    return lower * 1e3


def now_us() -> int:
    return time.time_ns() // 1000

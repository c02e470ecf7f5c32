"""Prometheus metrics that cost the hot path a dict lookup and a few integer adds.

Each worker keeps plain in-process counters and a latency histogram per label
set; a background task publishes a snapshot to `<metrics_dir>/worker-<pid>.json`
every second, and `/metrics` sums every worker's snapshot (its own live), so the
numbers are right with several workers — the same contract as
prometheus_client's multiprocess mode without its per-observation file writes.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """Counters of one worker process."""

    def __init__(self, metrics_dir: Path | None = None) -> None:
        self.metrics_dir = metrics_dir
        self.pid = os.getpid()
        # (variant, model_version, outcome, feature_source) -> count
        self.predictions: dict[tuple[str, str, str, str], int] = {}
        # (variant, model_version) -> [bucket counts..., +Inf count, sum]
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.http: dict[tuple[str, str, str], int] = {}  # (method, route, status) -> count
        self.model_info: dict[
            tuple[str, str, str, str], int
        ] = {}  # (model, version, variant, candidate) -> 1
        self.swaps = 0
        self.registry_errors = 0
        self.breakers: dict[str, int] = {}  # dependency -> 0 closed, 1 half-open, 2 open
        self.feature_store: dict[str, dict[str, int]] = {}  # kind -> stats (pool, cache, fallbacks)
        self.model_load_failures = 0
        # Set by refresh (off the hot path): ledger outcomes and gauges, background task health.
        self.audit: dict[str, float] = {}  # outcome -> records; plus queue_depth, spool_bytes, write sums
        self.tasks_up: dict[str, int] = {}
        self.assignments: dict[tuple[str, str], int] = {}  # (experiment, arm) -> requests
        self.shadow_outcomes: dict[tuple[str, str, str], int] = {}  # (experiment, shadow, outcome) -> n
        self.experiment_weights: dict[str, dict[str, float]] = {}  # running experiment -> arm weights
        self.task_restarts: dict[str, int] = {}
        # Monitoring gauges, family -> [labels..., value] rows (computed from the shared store).
        self.monitoring: dict[str, list[list[Any]]] = {}
        # Access control hands its live dicts over (serving.auth.AccessControl.bind_metrics).
        self.auth_failures: dict[str, int] = {}  # reason -> count
        self.rate_limit_decisions: dict[str, int] = {}  # outcome -> count

    def observe_prediction(
        self, variant: str, version: str, source: str, seconds: float, outcome: str
    ) -> None:
        """Hot path: one prediction's outcome and latency."""
        key = (variant, version, outcome, source)
        self.predictions[key] = self.predictions.get(key, 0) + 1
        hist = self.latency.get((variant, version))
        if hist is None:
            hist = self.latency[(variant, version)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        hist[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def observe_assignment(self, experiment: str, arm: str) -> None:
        key = (experiment, arm)
        self.assignments[key] = self.assignments.get(key, 0) + 1

    def observe_shadow(self, experiment: str, shadow: str, outcome: str) -> None:
        key = (experiment, shadow, outcome)
        self.shadow_outcomes[key] = self.shadow_outcomes.get(key, 0) + 1

    def observe_http(self, method: str, route: str, status: int) -> None:
        key = (method, route, str(status))
        self.http[key] = self.http.get(key, 0) + 1

    def set_models(self, slots: Iterable[tuple[str, str, str, str]]) -> None:
        self.model_info = dict.fromkeys(slots, 1)

    def snapshot(self) -> dict[str, Any]:
        """A copy safe to format in another thread: `dict.copy()` is one C-level step, while
        iterating a dict the event loop is adding keys to raises RuntimeError."""
        latency = self.latency.copy()
        return {
            "predictions": [[*k, v] for k, v in self.predictions.copy().items()],
            "latency": [[*k, list(v)] for k, v in latency.items()],
            "http": [[*k, v] for k, v in self.http.copy().items()],
            "model_info": [list(k) for k in self.model_info.copy()],
            "swaps": self.swaps,
            "registry_errors": self.registry_errors,
            "model_load_failures": self.model_load_failures,
            "breakers": self.breakers.copy(),
            "feature_store": self.feature_store.copy(),
            "audit": self.audit.copy(),
            "tasks_up": self.tasks_up.copy(),
            "task_restarts": self.task_restarts.copy(),
            "assignments": [[*k, v] for k, v in self.assignments.copy().items()],
            "shadows": [[*k, v] for k, v in self.shadow_outcomes.copy().items()],
            "experiment_weights": self.experiment_weights.copy(),
            "monitoring": self.monitoring.copy(),
            "auth_failures": [[k, v] for k, v in self.auth_failures.copy().items()],
            "rate_limit_decisions": [[k, v] for k, v in self.rate_limit_decisions.copy().items()],
        }

    def publish(self) -> None:
        """Write this worker's snapshot atomically (called off the request path)."""
        if self.metrics_dir is None:
            return
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        target = self.metrics_dir / f"worker-{self.pid}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()))
        temporary.replace(target)

    def snapshots(self) -> list[dict[str, Any]]:
        """This worker's snapshot (live) and every other worker's last one."""
        return [self.snapshot(), *self._other_snapshots()]

    def render(self) -> bytes:
        """Prometheus text for all workers: this one live, the others from their snapshots."""
        return "".join(_render(self.snapshots())).encode()

    def _other_snapshots(self) -> Iterator[dict[str, Any]]:
        if self.metrics_dir is not None:
            yield from published_snapshots(self.metrics_dir, skip=f"worker-{self.pid}.json")


def published_snapshots(metrics_dir: Path, skip: str | None = None) -> Iterator[dict[str, Any]]:
    """Every worker's last published snapshot (but `skip`'s)."""
    if not metrics_dir.is_dir():
        return
    for path in sorted(metrics_dir.glob("worker-*.json")):
        if path.name == skip:
            continue
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a worker mid-write: its next snapshot counts


def render_published(metrics_dir: Path) -> bytes:
    """Prometheus text summed over the snapshots the workers published (at most ~1 s old): what
    the separate metrics port serves, outside every worker."""
    return "".join(_render(list(published_snapshots(metrics_dir)))).encode()


def _labels(names: tuple[str, ...], values: Iterable[Any]) -> str:
    pairs = (f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sum_counts(snapshots: list[dict[str, Any]], key: str) -> dict[tuple[str, ...], float]:
    totals: dict[tuple[str, ...], float] = {}
    for snap in snapshots:
        for *labels, value in snap.get(key, []):
            totals[tuple(labels)] = totals.get(tuple(labels), 0) + value
    return totals


def sum_histograms(snapshots: list[dict[str, Any]]) -> dict[tuple[str, ...], list[float]]:
    totals: dict[tuple[str, ...], list[float]] = {}
    for snap in snapshots:
        for *labels, values in snap.get("latency", []):
            current = totals.setdefault(tuple(labels), [0.0] * len(values))
            for i, v in enumerate(values):
                current[i] += v
    return totals


def _render(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    yield "# HELP predictions_total Predictions by variant, model version, outcome and feature source.\n"
    yield "# TYPE predictions_total counter\n"
    names = ("variant", "model_version", "outcome", "feature_source")
    for labels, value in sorted(sum_counts(snapshots, "predictions").items()):
        yield f"predictions_total{_labels(names, labels)} {value:g}\n"
    yield from _render_latency(snapshots)
    yield "# HELP http_requests_total HTTP requests by method, route and status.\n"
    yield "# TYPE http_requests_total counter\n"
    for labels, value in sorted(sum_counts(snapshots, "http").items()):
        yield f"http_requests_total{_labels(('method', 'route', 'status'), labels)} {value:g}\n"
    yield "# HELP model_version_info Model versions live in a serving slot (value 1).\n"
    yield "# TYPE model_version_info gauge\n"
    live = {tuple(k) for snap in snapshots[:1] for k in snap["model_info"]}  # this worker's view
    for labels in sorted(live):
        yield f"model_version_info{_labels(('model', 'model_version', 'variant', 'candidate'), labels)} 1\n"
    yield from _render_scalars(snapshots)
    yield from _render_access(snapshots)


def _render_access(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    yield "# HELP auth_failures_total Requests refused by access control, by reason.\n"
    yield "# TYPE auth_failures_total counter\n"
    for (reason,), value in sorted(sum_counts(snapshots, "auth_failures").items()):
        yield f'auth_failures_total{{reason="{_escape(reason)}"}} {value:g}\n'
    yield "# HELP rate_limit_decisions_total Rate-limit decisions; fallback_*: Redis down, local share.\n"
    yield "# TYPE rate_limit_decisions_total counter\n"
    for (outcome,), value in sorted(sum_counts(snapshots, "rate_limit_decisions").items()):
        yield f'rate_limit_decisions_total{{outcome="{_escape(outcome)}"}} {value:g}\n'


def _render_latency(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    yield "# HELP inference_latency_seconds Time to answer one prediction, from request to response.\n"
    yield "# TYPE inference_latency_seconds histogram\n"
    for (variant, version), values in sorted(sum_histograms(snapshots).items()):
        base = f'variant="{_escape(variant)}",model_version="{_escape(version)}"'
        cumulative = 0.0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), values[:-1], strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            yield f'inference_latency_seconds_bucket{{{base},le="{le}"}} {cumulative:g}\n'
        yield f"inference_latency_seconds_count{{{base}}} {cumulative:g}\n"
        yield f"inference_latency_seconds_sum{{{base}}} {values[-1]:.6f}\n"


def _render_scalars(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    yield "# HELP model_swaps_total Blue/green model swaps completed.\n# TYPE model_swaps_total counter\n"
    yield f"model_swaps_total {sum(s.get('swaps', 0) for s in snapshots)}\n"
    yield "# HELP registry_poll_errors_total Failed polls of the model registry.\n"
    yield "# TYPE registry_poll_errors_total counter\n"
    yield f"registry_poll_errors_total {sum(s.get('registry_errors', 0) for s in snapshots)}\n"
    yield "# HELP circuit_breaker_state Breaker per dependency: 0 closed, 1 half-open, 2 open.\n"
    yield "# TYPE circuit_breaker_state gauge\n"
    worst: dict[str, int] = {}
    for snap in snapshots:
        for dependency, state in snap.get("breakers", {}).items():
            worst[dependency] = max(worst.get(dependency, 0), state)
    for dependency, state in sorted(worst.items()):
        yield f'circuit_breaker_state{{dependency="{_escape(dependency)}"}} {state}\n'
    yield "# HELP model_load_failures_total Model versions that failed to load (the verified one kept on).\n"
    yield "# TYPE model_load_failures_total counter\n"
    yield f"model_load_failures_total {sum(s.get('model_load_failures', 0) for s in snapshots)}\n"
    yield from _render_audit(snapshots)
    yield from _render_experiments(snapshots)
    yield from _render_tasks(snapshots)
    yield from _render_monitoring(snapshots)
    yield "# HELP feature_store_stat Online feature store: pool use, cache, errors and fallbacks (summed).\n"
    yield "# TYPE feature_store_stat gauge\n"
    totals: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        for kind, stats in snap.get("feature_store", {}).items():
            for stat, value in stats.items():
                totals[(kind, stat)] = totals.get((kind, stat), 0) + value
    for (kind, stat), value in sorted(totals.items()):
        yield f'feature_store_stat{{store="{_escape(kind)}",stat="{_escape(stat)}"}} {value}\n'


AUDIT_OUTCOMES = ("written", "spooled", "replayed", "refused", "unsealable")


def _render_audit(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    totals: dict[str, float] = {}
    for snap in snapshots:
        for name, value in snap.get("audit", {}).items():
            totals[name] = totals.get(name, 0) + value
    if not totals:
        return
    yield "# HELP audit_records_total Ledger records by outcome (written, spooled, replayed, refused,"
    yield " unsealable).\n"
    yield "# TYPE audit_records_total counter\n"
    for outcome in AUDIT_OUTCOMES:
        yield f'audit_records_total{{outcome="{outcome}"}} {totals.get(outcome, 0):g}\n'
    yield "# HELP audit_queue_depth Ledger records waiting to be written (all workers).\n"
    yield "# TYPE audit_queue_depth gauge\n"
    yield f"audit_queue_depth {totals.get('queue_depth', 0):g}\n"
    yield "# HELP audit_spool_bytes Bytes in the ledger spool files, waiting for the database.\n"
    yield "# TYPE audit_spool_bytes gauge\n"
    yield f"audit_spool_bytes {totals.get('spool_bytes', 0):g}\n"
    yield "# HELP audit_write_seconds Time to store one batch of ledger records in the database.\n"
    yield "# TYPE audit_write_seconds summary\n"
    yield f"audit_write_seconds_sum {totals.get('write_seconds_sum', 0):.6f}\n"
    yield f"audit_write_seconds_count {totals.get('writes', 0):g}\n"
    yield (
        "# HELP audit_seal_seconds Time the serving processes spent sealing ledger records (pseudonym,"
        " encryption, hash chain) on their event loops; count: records sealed.\n"
    )
    yield "# TYPE audit_seal_seconds summary\n"
    yield f"audit_seal_seconds_sum {totals.get('seal_seconds_sum', 0):.6f}\n"
    yield f"audit_seal_seconds_count {totals.get('sealed', 0):g}\n"
    yield (
        "# HELP audit_vectors_sealed_total Feature vectors encrypted afresh; a record whose customer's"
        " vector is unchanged reuses its ciphertext (audit_seal_seconds_count minus this: reuses).\n"
    )
    yield "# TYPE audit_vectors_sealed_total counter\n"
    yield f"audit_vectors_sealed_total {totals.get('vectors_sealed', 0):g}\n"


def _render_tasks(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    up: dict[str, int] = {}
    restarts: dict[str, int] = {}
    for snap in snapshots:
        for task, value in snap.get("tasks_up", {}).items():
            up[task] = min(up.get(task, 1), int(value))  # down in any worker is down
        for task, value in snap.get("task_restarts", {}).items():
            restarts[task] = restarts.get(task, 0) + int(value)
    yield "# HELP background_task_up 1 while a background task runs in every worker, 0 when one is down.\n"
    yield "# TYPE background_task_up gauge\n"
    for task, value in sorted(up.items()):
        yield f'background_task_up{{task="{_escape(task)}"}} {value}\n'
    yield "# HELP background_task_restarts_total Restarts of background tasks after a failure.\n"
    yield "# TYPE background_task_restarts_total counter\n"
    for task, value in sorted(restarts.items()):
        yield f'background_task_restarts_total{{task="{_escape(task)}"}} {value}\n'


# family -> (type, help, label names). Every worker computes these from the same shared store:
# this worker's view is the one exported (as for model_version_info).
MONITORING_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "feature_drift_psi": (
        "gauge",
        "PSI of each feature in the drift window (judged windows only).",
        ("feature", "variant"),
    ),
    "prediction_drift_psi": (
        "gauge",
        "PSI of the predicted probabilities in the drift window.",
        ("variant",),
    ),
    "drift_drifted_features_ratio": (
        "gauge",
        "Share of features at warn or worse (PSI or unseen categories) in the drift window.",
        ("variant",),
    ),
    "drift_window_predictions": (
        "gauge",
        "Predictions in the drift window (all workers and replicas).",
        ("variant",),
    ),
    "model_performance": (
        "gauge",
        "Newest cohort's performance: realised (labelled) or estimated (CBPE, before labels).",
        ("metric", "variant", "kind"),
    ),
    "model_performance_gate": ("gauge", "The floor of params.yaml monitoring.gate per metric.", ("metric",)),
    "cost_per_1000_predictions_usd": (
        "gauge",
        "Measured CPU and memory cost of 1,000 predictions in the cost window, priced from params.yaml.",
        ("variant",),
    ),
}


def _render_monitoring(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    own = snapshots[0].get("monitoring", {}) if snapshots else {}
    for family, (kind, text, names) in MONITORING_FAMILIES.items():
        yield f"# HELP {family} {text}\n# TYPE {family} {kind}\n"
        for *labels, value in sorted(own.get(family, []), key=lambda row: [str(x) for x in row[:-1]]):
            yield f"{family}{_labels(names, labels)} {float(value):.6g}\n"


def _render_experiments(snapshots: list[dict[str, Any]]) -> Iterator[str]:
    from churnops.core.stats import srm_test

    assignments = sum_counts(snapshots, "assignments")
    yield "# HELP experiment_assignments_total Requests served by each arm of an experiment.\n"
    yield "# TYPE experiment_assignments_total counter\n"
    for (experiment, arm), value in sorted(assignments.items()):
        labels = f'experiment="{_escape(experiment)}",arm="{_escape(arm)}"'
        yield f"experiment_assignments_total{{{labels}}} {value:g}\n"
    yield "# HELP shadow_predictions_total Shadow scorings by outcome (ok, or the error type).\n"
    yield "# TYPE shadow_predictions_total counter\n"
    for (experiment, shadow, outcome), value in sorted(sum_counts(snapshots, "shadows").items()):
        labels = f'experiment="{_escape(experiment)}",shadow="{_escape(shadow)}",outcome="{_escape(outcome)}"'
        yield f"shadow_predictions_total{{{labels}}} {value:g}\n"
    weights = snapshots[0].get("experiment_weights", {}) if snapshots else {}
    yield "# HELP experiment_srm_p_value Sample-ratio-mismatch chi-square p-value of the live assignments.\n"
    yield "# TYPE experiment_srm_p_value gauge\n"
    for experiment, arm_weights in sorted(weights.items()):
        counts = [assignments.get((experiment, arm), 0) for arm in arm_weights]
        if sum(counts) == 0:
            continue
        p_value = srm_test(counts, list(arm_weights.values())).p_value
        yield f'experiment_srm_p_value{{experiment="{_escape(experiment)}"}} {p_value:.6g}\n'

"""The steps of one lifecycle cycle, each usable on its own (the Airflow DAG runs them as tasks):

- `judge_bake`: a bake under way is judged; a breach rolls back to the replaced champion.
- `plan`: which triggers fire (new data, drift, decay, schedule, manual) and on what data.
- `prepare`: the retraining data and the spec in the run's working directory (`plan.json`).
- `record`: the cycle's outcome as a `lifecycle.cycle` event; the data it used marked seen.

The pipeline between `prepare` and `record` is the ordinary one (its registration runs the
promotion path); jobs.lifecycle chains the steps under the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from churnops.core.lifecycle import Reference, Signals, Trigger, due_triggers, judge_bake
from churnops.core.lifecycle_params import seconds
from churnops.core.spec import DatasetSpec
from churnops.errors import NotFound
from churnops.io.registry import CHAMPION
from churnops.jobs.models import rollback
from churnops.jobs.promote import BAKE, Lifecycle
from churnops.jobs.retrain_data import NewData, find_new_data, ledger_training_data, mark_seen, materialise
from churnops.jobs.signals import ServiceSignals, SignalSource
from churnops.jobs.version_files import load_gates
from churnops.jobs.workdir import Workdir, read_json, write_json

logger = logging.getLogger(__name__)

INPUT = "input.parquet"  # the retraining data, whatever its source, in the run's working directory
PLAN = "plan.json"
LAST_CYCLE = "last_cycle"
LAST_RETRAIN = "last_retrain"
SourceFactory = Callable[[Lifecycle, str], SignalSource]


@dataclass
class CycleResult:
    """What a cycle did: idle, skipped, baking, bake_passed, rolled_back, or a retraining's outcome
    (promoted, pending_approval, rejected, failed)."""

    outcome: str
    reasons: list[str] = field(default_factory=list)
    triggers: list[dict[str, str]] = field(default_factory=list)
    version: str | None = None
    run_dir: str | None = None
    data: dict[str, Any] | None = None
    event_id: str | None = None
    started_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    finished_us: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        head = f"cycle {self.outcome}"
        if self.version:
            head += f" (v{self.version})"
        return head + (": " + "; ".join(self.reasons) if self.reasons else "")


@dataclass
class Plan:
    """The triggers that fired and the new data seen, for the champion of `model`."""

    model: str | None
    champion: str | None
    triggers: list[Trigger]
    new: list[NewData]
    signals: Signals | None = None

    def reasons(self) -> list[str]:
        if self.triggers:
            return [t.reason for t in self.triggers]
        found = [f"no trigger fired (champion v{self.champion})" if self.champion else "no trigger fired"]
        if self.signals is not None:
            found.append(f"drift {self.signals.drift_status}: {self.signals.drift_message}")
        return found


def default_source(lc: Lifecycle, model: str) -> SignalSource:
    url = lc.params.lifecycle.service_url or f"http://{lc.settings.serve_host}:{lc.settings.serve_port}"
    return ServiceSignals(lc, model, url.rstrip("/") + "/metrics")


def model_of(lc: Lifecycle) -> str | None:
    try:
        return lc.model()
    except NotFound:
        return None


def reference_of(lc: Lifecycle, name: str | None, version: str | None) -> Reference:
    """A version's figures on its own gate evaluation rows (what decay and the bake compare with)."""
    if name is None or version is None:
        return Reference()
    return Reference.of((load_gates(lc.registry, name, version) or {}).get("reference"))


# -- the bake ---------------------------------------------------------------------------------


BAKE_OVER = ("bake_passed", "bake_inconclusive")  # the loop goes on after these


def bake_step(
    lc: Lifecycle, principal: str | None, make_source: SourceFactory = default_source
) -> CycleResult | None:
    """Judge the bake under way (None when there is none): `baking`, `bake_passed`, `rolled_back` or
    `bake_inconclusive` (its deadline came before enough predictions: the champion stays)."""
    bake = lc.state.get(BAKE)
    name = model_of(lc)
    if bake is None or name is None or bake.get("model") != name:
        return None
    params = lc.params.lifecycle.bake
    version, previous = str(bake["version"]), str(bake["previous"])
    champion = lc.registry.alias_version(name, CHAMPION)
    if champion != version:
        lc.state.delete(BAKE)
        return CycleResult("bake_passed", [f"bake of v{version} ended: champion is now v{champion}"])
    signals = make_source(lc, name).signals(version, int(bake["started_us"]), params.min_predictions)
    replaced = reference_of(lc, name, previous)
    verdict = judge_bake(params, signals, replaced, started_s=bake["started_us"] / 1e6, now_s=time.time())
    result = CycleResult(verdict.outcome, list(verdict.reasons), version=version)
    result.data = {"signals": signals.to_dict(), "replaced": asdict(replaced)}
    if verdict.outcome == "baking":
        return result
    if verdict.outcome == "breach":
        reason = "bake breach: " + "; ".join(verdict.reasons)
        move = rollback(lc, previous, principal=principal, model=name, trigger="bake", reason=reason)
        result.outcome, result.event_id = "rolled_back", move.event_id
    elif verdict.outcome == "inconclusive":  # no traffic to judge it on: it stays, the loop goes on
        result.outcome = "bake_inconclusive"
        logger.warning("%s v%s: bake inconclusive, stays champion: %s", name, version, verdict.reasons[0])
    else:
        result.outcome = "bake_passed"
    return conclude(lc, "bake", BAKE, result, principal)


def conclude(
    lc: Lifecycle, what: str, state_key: str, result: CycleResult, principal: str | None
) -> CycleResult:
    """The end of a bake or a trial: its `lifecycle.<what>` event, with the state it kept deleted in
    the same transaction (so a crash cannot judge it twice)."""
    result.finished_us = time.time_ns() // 1000
    event_id, _ = lc.events.append(
        f"lifecycle.{what}", result.to_dict(), principal, then=lambda conn: lc.state.delete(state_key, conn)
    )
    result.event_id = result.event_id or event_id
    return result


# -- triggers --------------------------------------------------------------------------------


def plan(
    lc: Lifecycle, base: Path, *, force: bool = False, make_source: SourceFactory = default_source
) -> Plan:
    """Which triggers fire now (see core.lifecycle.due_triggers), measured on the champion's traffic."""
    params = lc.params.lifecycle
    name = model_of(lc)
    champion = lc.registry.alias_version(name, CHAMPION) if name else None
    now_s = time.time()
    signals = None
    if name is not None and champion is not None:
        since = int((now_s - seconds(params.drift.window)) * 1e6)
        signals = make_source(lc, name).signals(champion, since, params.drift.min_predictions)
    new = find_new_data(lc, params.new_data, base)
    last = (lc.state.get(LAST_RETRAIN) or {}).get("at_us")
    triggers = due_triggers(
        params,
        now_s=now_s,
        last_retrain_s=last / 1e6 if last else None,
        signals=signals,
        reference=reference_of(lc, name, champion),
        new_data=[n.label for n in new],
    )
    if force:
        triggers.append(Trigger("manual", "a retraining was asked for (--force)"))
    return Plan(name, champion, triggers, new, signals)


# -- data ------------------------------------------------------------------------------------


def prepare(
    lc: Lifecycle, planned: Plan, workdir: Workdir, spec: DatasetSpec | None = None
) -> dict[str, Any]:
    """Write the retraining data and spec into the working directory; returns (and keeps, as
    `plan.json`) what the pipeline and `record` need: data path, spec path, triggers, new data."""
    from churnops.io.datasets import read_table, write_table

    spec = spec or _spec(lc, planned)
    workdir.root.mkdir(parents=True, exist_ok=True)
    source, info = _data(lc, spec, planned.new, workdir.root)
    data = workdir.root / INPUT
    if source != data:
        write_table(read_table(source), data)
    spec_path = workdir.root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    prepared = {
        "data": str(data),
        "spec": str(spec_path),
        "data_info": info,
        "triggers": [asdict(t) for t in planned.triggers],
        "trigger": "lifecycle:" + ",".join(t.name for t in planned.triggers),
        "new": [{"label": n.label, "path": str(n.path) if n.path else None, "table": n.table, "mark": n.mark}
                for n in planned.new],
        "started_us": time.time_ns() // 1000,
    }  # fmt: skip
    write_json(workdir.root / PLAN, prepared)
    return prepared


def _data(lc: Lifecycle, spec: DatasetSpec, new: list[NewData], root: Path) -> tuple[Path, dict[str, Any]]:
    retrain = lc.params.lifecycle.retrain
    if new and retrain.source in ("auto", "new_data"):
        item = new[-1]  # the newest
        return materialise(lc, item, root), {"source": "new_data", "what": item.label}
    if retrain.source == "new_data":
        raise NotFound("lifecycle.retrain.source is new_data and no new data arrived")
    since = int((time.time() - seconds(retrain.ledger_window)) * 1e6)
    path, summary = ledger_training_data(lc, spec, spec.feature_set_version(), since, root / INPUT)
    if summary["rows"] < retrain.min_rows:
        raise NotFound(
            f"the ledger holds {summary['rows']} labelled predictions to train on "
            f"(lifecycle.retrain.min_rows is {retrain.min_rows}): nothing retrained"
        )
    return path, {"source": "ledger", **summary}


def _spec(lc: Lifecycle, planned: Plan) -> DatasetSpec:
    """The champion's own spec (from its bundle), or the built-in synthetic one before any."""
    if planned.model is None or planned.champion is None:
        from churnops.io.datasets import load_spec

        return load_spec("synthetic")
    return lc.registry.load_bundle(planned.model, planned.champion).spec


# -- the record ------------------------------------------------------------------------------


def record(
    lc: Lifecycle, result: CycleResult, principal: str | None, prepared: dict[str, Any] | None
) -> CycleResult:
    """Record the cycle; the new data it used (or that validation refused) is not tried again,
    while after any other failure it is."""
    result.finished_us = time.time_ns() // 1000
    consumed = [] if result.outcome == "failed" or prepared is None else _new_data(prepared)

    def then(conn: Any) -> None:
        mark_seen(lc, consumed, conn)
        lc.state.put(LAST_RETRAIN, {"at_us": result.started_us, "outcome": result.outcome}, conn)
        lc.state.put(LAST_CYCLE, result.to_dict(), conn)

    result.event_id, _ = lc.events.append("lifecycle.cycle", result.to_dict(), principal, then=then)
    return result


def outcome_of(workdir: Workdir, result: CycleResult) -> CycleResult:
    """Fill a cycle's outcome from what the pipeline left in its working directory (the DAG's case)."""
    if workdir.registration.is_file():
        registered = read_json(workdir.registration)
        status = registered["status"]
        result.version = registered["version"]
        result.outcome = "promoted" if status == CHAMPION else status
        result.reasons = [registered["reason"]]
        return result
    report = workdir.validation_dir / "validation.json"
    if report.is_file() and not read_json(report).get("success", True):
        result.outcome = "rejected"
        first = read_json(report).get("first_failure")
        result.reasons = [
            f"validation failed: {first} (report: {workdir.validation_dir / 'validation.html'})"
        ]
        result.data = (result.data or {}) | {
            "validation_report": str(workdir.validation_dir / "validation.html")
        }
        return result
    result.outcome, result.reasons = "failed", ["the pipeline stopped before registration"]
    return result


def _new_data(prepared: dict[str, Any]) -> list[NewData]:
    return [
        NewData(n["label"], path=Path(n["path"]) if n["path"] else None, table=n["table"], mark=n["mark"])
        for n in prepared.get("new", [])
    ]

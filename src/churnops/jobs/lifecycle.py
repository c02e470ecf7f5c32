"""The closed loop: `churnops lifecycle run` is one cycle, `watch` repeats it, `status` reports.

One cycle, under the lease (one at a time per SQL store):

1. A bake under way (after a promotion) is judged first: a breach rolls back to the replaced
   champion on its own; then a trial under way (jobs.lifecycle_trial): a breach rejects the
   candidate, a trial that held promotes it. While either lasts nothing is retrained (one change
   at a time).
2. Triggers (params.yaml `lifecycle:`): new labelled data (a file glob or a table watermark),
   a drift alert on the champion's traffic, performance decay (realised AUC, or estimated while
   labels are immature), the schedule; `--force` adds a manual one.
3. Retraining data: the new data, or the ledger's labelled predictions joined point in time to
   the offline store (opted-out customers left out), in the run's own working directory.
4. The pipeline, whose registration runs the promotion path (gates -> challenger -> champion,
   pending approval or rejected; or `in_trial` when `lifecycle.trial` asks for live traffic
   first, and the trial's experiment starts); a promotion starts the bake.
5. The decision and its reasons as a `lifecycle.cycle` event (a run whose data fails validation
   is recorded as rejected with the validation report).

The steps live in jobs.lifecycle_steps, where the Airflow DAG calls them one task at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from churnops.core.params import Params
from churnops.core.spec import DatasetSpec
from churnops.errors import ChurnopsError, ValidationFailed
from churnops.io.lifecycle_store import CycleLease, lifecycle_events
from churnops.io.registry import CHALLENGER, CHAMPION
from churnops.jobs.lifecycle_steps import (
    BAKE_OVER,
    LAST_CYCLE,
    LAST_RETRAIN,
    CycleResult,
    SourceFactory,
    bake_step,
    default_source,
    model_of,
    plan,
    prepare,
    record,
)
from churnops.jobs.lifecycle_trial import after_registration, trial_step
from churnops.jobs.promote import BAKE, TRIAL, Lifecycle, open_lifecycle
from churnops.jobs.retrain_data import WATERMARK
from churnops.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["CycleResult", "run_cycle", "status", "watch"]


def run_cycle(
    settings: Settings,
    params: Params,
    *,
    principal: str | None,
    force: bool = False,
    spec: DatasetSpec | None = None,
    base: Path | None = None,
    source: SourceFactory = default_source,
) -> CycleResult:
    """One cycle under the lease; a second caller meanwhile gets `skipped` at once."""
    with open_lifecycle(settings, params) as lc:
        lease = CycleLease(lc.sql, settings.home)
        if not lease.acquire():
            return CycleResult("skipped", [f"another cycle holds the {lease.kind}"])
        try:
            result = _cycle(lc, principal, force, spec, base or Path.cwd(), source)
        finally:
            lease.release()
    logger.info("%s", result.line())
    return result


def _cycle(
    lc: Lifecycle,
    principal: str | None,
    force: bool,
    spec: DatasetSpec | None,
    base: Path,
    source: SourceFactory,
) -> CycleResult:
    baked = bake_step(lc, principal, source)
    if baked is not None and baked.outcome not in BAKE_OVER:
        return _remember(lc, baked)
    trialled = trial_step(lc, principal, source)
    if trialled is not None and trialled.outcome != "trial_ended":
        return _remember(lc, trialled)  # one change at a time: nothing is retrained during a trial
    planned = plan(lc, base, force=force, make_source=source)
    if not planned.triggers:
        ended = "passed" if baked is not None and baked.outcome == "bake_passed" else "ended inconclusive"
        done = (
            [f"bake of v{baked.version} {ended}: {'; '.join(baked.reasons)}"]
            if baked and baked.version
            else []
        )
        done += trialled.reasons if trialled is not None else []
        return _remember(lc, CycleResult("idle", done + planned.reasons()))
    return _retrain(lc, planned, principal, spec)


def _retrain(lc: Lifecycle, planned: Any, principal: str | None, spec: DatasetSpec | None) -> CycleResult:
    from churnops.io.datasets import load_spec
    from churnops.jobs.pipeline import run_pipeline, run_workdir

    workdir = run_workdir(lc.settings, "lifecycle")
    triggers = [{"name": t.name, "reason": t.reason} for t in planned.triggers]
    result = CycleResult("failed", planned.reasons(), triggers=triggers, run_dir=str(workdir.root))
    prepared = None
    try:
        prepared = prepare(lc, planned, workdir, spec)
        result.data = prepared["data_info"]
        registered = run_pipeline(
            Path(prepared["data"]),
            load_spec(prepared["spec"]),
            lc.params,
            lc.settings,
            workdir,
            trigger=prepared["trigger"],
            principal=principal,
        )["register"]
    except ValidationFailed as err:
        result.outcome, result.reasons = "rejected", [str(err)]
        result.data = (result.data or {}) | {"validation_report": str(err.report) if err.report else None}
    except ChurnopsError as err:
        result.reasons = [str(err)]
    else:
        status = registered["status"]
        result.version = registered["version"]
        result.outcome = "promoted" if status == CHAMPION else status
        result.reasons = [registered["reason"]]
    return record(lc, after_registration(lc, result, principal), principal, prepared)


def _remember(lc: Lifecycle, result: CycleResult) -> CycleResult:
    import time

    result.finished_us = time.time_ns() // 1000
    lc.state.put(LAST_CYCLE, result.to_dict())
    return result


def watch(
    settings: Settings,
    load: Callable[[], Params],
    every_s: float,
    stop: threading.Event,
    report: Callable[[CycleResult], None],
    *,
    principal: str | None,
    spec: DatasetSpec | None = None,
    source: SourceFactory = default_source,
) -> int:
    """Run a cycle, then wait `every_s` (or until `stop`), until stopped; returns the cycles run.
    A failing cycle is logged and reported, and the next one runs on time."""
    cycles = 0
    while not stop.is_set():
        try:
            result = run_cycle(settings, load(), principal=principal, spec=spec, source=source)
        except ChurnopsError as err:
            result = CycleResult("failed", [str(err)])
        except Exception as err:  # a daemon outlives one bad cycle; the traceback goes to the log
            logger.exception("lifecycle cycle failed")
            result = CycleResult("failed", [f"unexpected {type(err).__name__}: {err}"])
        cycles += 1
        report(result)
        stop.wait(every_s)
    return cycles


def status(settings: Settings, params: Params) -> dict[str, Any]:
    """Champion, challenger, pending approvals, the bake, the last cycle, the lease, recent events."""
    with open_lifecycle(settings, params) as lc:
        name = model_of(lc)
        lease = CycleLease(lc.sql, settings.home)
        running = not lease.acquire()
        lease.release()
        versions = lc.registry.list_versions(name) if name else []
        state = lc.state.all()
        return {
            "model": name,
            "champion": lc.registry.alias_version(name, CHAMPION) if name else None,
            "challenger": lc.registry.alias_version(name, CHALLENGER) if name else None,
            "pending_approval": [v["version"] for v in versions if v["status"] == "pending_approval"],
            "cycle_running": running,
            "bake": state.get(BAKE),
            "trial": state.get(TRIAL),
            "last_cycle": state.get(LAST_CYCLE),
            "last_retrain": state.get(LAST_RETRAIN),
            "data_seen": state.get(WATERMARK),
            "triggers": _triggers(params),
            "recent_events": lifecycle_events(lc.sql, limit=10),
        }


def _triggers(params: Params) -> dict[str, Any]:
    lc = params.lifecycle
    return {
        "schedule": lc.schedule,
        "min_interval": lc.min_interval,
        "drift": lc.drift.model_dump() if lc.drift.enabled else None,
        "performance": lc.performance.model_dump() if lc.performance.enabled else None,
        "new_data": lc.new_data.model_dump(),
        "trial": lc.trial.model_dump(),
        "bake": lc.bake.model_dump(),
    }

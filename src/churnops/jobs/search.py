"""Search: Optuna TPE per candidate family, k-fold on the fit rows, inside a wall-clock budget.

Each searched candidate gets its share of what is left of the budget (`core.search.family_budget`).
Its study starts with the candidate's own parameters (trial 0) and, when given, the previous
champion's; then TPE samples. A trial is scored fold by fold; the pruner (median or successive
halving over folds) stops a poor one after any fold, and a trial the deadline cuts short is
recorded as `out_of_time`, never scored. A family stops early after `patience` trials without
improvement. The trials are returned as plain records; the register step logs them to MLflow.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from churnops.core.candidates import TrainingData
from churnops.core.params import CandidateParams, SearchParams, TrainingParams
from churnops.core.search import (
    OutOfTime,
    better,
    family_budget,
    fold_indices,
    score_folds,
    shares,
    suggest,
    with_params,
    within,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
DEFAULT, CHAMPION, SAMPLED = "default", "champion", "sampled"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the register step logs it (a child MLflow run)."""

    number: int
    state: str  # complete | pruned | out_of_time | failed
    source: str  # default | champion | sampled
    value: float | None
    params: dict[str, Any]
    folds: list[float]
    started: float  # epoch seconds
    seconds: float


@dataclass
class FamilyResult:
    """The search of one candidate: its best CV configuration and every trial."""

    candidate: str
    kind: str
    metric: str
    budget_seconds: float
    best_params: dict[str, Any] | None = None  # the searched values only
    best_value: float | None = None
    best_source: str | None = None
    default_value: float | None = None
    seconds: float = 0.0
    stopped: str = "budget"  # budget | patience | max_trials
    trials: list[TrialRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        states = [t.state for t in self.trials]
        return {
            "budget_seconds": round(self.budget_seconds, 3),
            "seconds": round(self.seconds, 3),
            "trials": len(self.trials),
            "complete": states.count("complete"),
            "pruned": states.count("pruned"),
            "out_of_time": states.count("out_of_time"),
            "failed": states.count("failed"),
            "stopped": self.stopped,
            f"best_cv_{self.metric}": self.best_value,
            f"default_cv_{self.metric}": self.default_value,
            "best_source": self.best_source,
            "best_params": self.best_params,
        }


def run_search(
    training: TrainingParams,
    data: TrainingData,
    deadline: float,
    warm_start: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
) -> dict[str, FamilyResult]:
    """Search every candidate whose family has a space, in order, until `deadline`."""
    import optuna

    # Optuna prints a line per trial on its own handler; the pipeline's progress line says it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = training.search
    searched = [c for c in training.candidates if search.spaces.get(c.kind)]
    fewest = int(np.bincount(data.y_fit, minlength=2).min())
    if fewest < search.folds:
        logger.warning(
            "search skipped: the fit rows hold %d of their rarer class, fewer than folds=%d",
            fewest,
            search.folds,
        )
        return {}
    folds = fold_indices(data.y_fit, search.folds, search.seed, search.max_rows)
    weights = shares([c.name for c in searched], {c.name: search.shares.get(c.kind, 1.0) for c in searched})
    results: dict[str, FamilyResult] = {}
    for i, candidate in enumerate(searched):
        later = sum(weights[c.name] for c in searched[i + 1 :])
        budget = family_budget(deadline - time.perf_counter(), weights[candidate.name], later)
        if budget < 0.05:
            logger.warning("search budget spent: %s not searched", candidate.name)
            continue
        warm = (warm_start or {}).get(candidate.kind)
        results[candidate.name] = _search_family(
            candidate, training.selection_metric, search, data, folds, budget, warm, progress
        )
    return results


def _search_family(
    candidate: CandidateParams,
    metric: str,
    search: SearchParams,
    data: TrainingData,
    folds: list[tuple[np.ndarray, np.ndarray]],
    budget: float,
    warm: Mapping[str, Any] | None,
    progress: Progress | None,
) -> FamilyResult:
    import optuna

    started = time.perf_counter()
    family_deadline = started + budget
    space = search.spaces[candidate.kind]
    result = FamilyResult(candidate.name, candidate.kind, metric, budget)
    study = optuna.create_study(
        direction="minimize" if metric == "log_loss" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=5),
        pruner=_pruner(search),
    )
    # Trial 0 is the candidate exactly as configured, the next the previous champion's configuration:
    # they draw no other parameter (one the candidate leaves unset keeps the library's default).
    default = within(space, candidate.params)
    study.enqueue_trial(default, user_attrs={"source": DEFAULT, "fixed": sorted(default)})
    champion = within(space, warm or {})
    if champion and champion != default:
        study.enqueue_trial(champion, user_attrs={"source": CHAMPION, "fixed": sorted(champion)})

    def objective(trial: optuna.Trial) -> float:
        fixed = trial.user_attrs.get("fixed")
        values = suggest(trial, space if fixed is None else {k: space[k] for k in fixed})

        def report(fold: int, mean: float) -> None:
            trial.report(mean, fold)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            config = with_params(candidate, _one_thread(candidate) | values)
            scores = score_folds(config, data.x_fit, data.y_fit, folds, metric, family_deadline, report)
        except OutOfTime as err:
            trial.set_user_attr("out_of_time", True)
            raise optuna.TrialPruned(str(err)) from err
        trial.set_user_attr("folds", scores)
        return float(np.mean(scores))

    tracker = _Tracker(result, metric, search.patience, family_deadline, progress)
    study.optimize(
        objective,
        n_trials=search.max_trials,
        timeout=budget,
        catch=_trial_errors(),
        callbacks=[tracker],
    )
    result.seconds = time.perf_counter() - started
    if search.max_trials is not None and len(result.trials) >= search.max_trials:
        result.stopped = "max_trials"
    logger.info(
        "searched %s: %d trials in %.1f s (%s), best CV %s %s (defaults %s)",
        candidate.name,
        len(result.trials),
        result.seconds,
        result.stopped,
        metric,
        _fmt(result.best_value),
        _fmt(result.default_value),
    )
    return result


class _Tracker:
    """Optuna callback: records each trial, reports progress, stops on patience."""

    def __init__(
        self,
        result: FamilyResult,
        metric: str,
        patience: int | None,
        deadline: float,
        progress: Progress | None,
    ) -> None:
        self.result, self.metric, self.patience = result, metric, patience
        self.deadline, self.progress = deadline, progress
        self.since_best = 0

    def __call__(self, study: Any, trial: Any) -> None:
        record = _record(trial)
        self.result.trials.append(record)
        if record.source == DEFAULT and record.state == "complete":
            self.result.default_value = record.value
        self.since_best += 1
        if record.value is not None and (
            self.result.best_value is None or better(self.metric, record.value, self.result.best_value)
        ):
            self.result.best_value, self.result.best_params = record.value, dict(record.params)
            self.result.best_source = record.source
            self.since_best = 0
        if self.progress:
            left = max(0.0, self.deadline - time.perf_counter())
            self.progress(
                f"search {self.result.candidate}: trial {record.number + 1} {record.state}, "
                f"best CV {self.metric} {_fmt(self.result.best_value)}, {left:.0f} s left"
            )
        if self.patience is not None and self.since_best >= self.patience:
            self.result.stopped = "patience"
            study.stop()


def _record(trial: Any) -> TrialRecord:
    import optuna

    state = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
    }.get(trial.state, "failed")
    if state == "pruned" and trial.user_attrs.get("out_of_time"):
        state = "out_of_time"
    start, end = trial.datetime_start, trial.datetime_complete
    value = trial.value if state == "complete" and trial.value is not None else None
    return TrialRecord(
        number=trial.number,
        state=state,
        source=str(trial.user_attrs.get("source", SAMPLED)),
        value=float(value) if value is not None and math.isfinite(value) else None,
        params=dict(trial.params),
        folds=[float(v) for v in trial.user_attrs.get("folds", [])],
        started=start.timestamp() if start else time.time(),
        seconds=(end - start).total_seconds() if start and end else 0.0,
    )


_THREAD_PARAMS = {"lightgbm": "num_threads", "xgboost": "nthread"}
_THREAD_ALIASES = {"num_threads", "num_thread", "nthread", "nthreads", "n_jobs"}


def _one_thread(candidate: CandidateParams) -> dict[str, Any]:
    """Trials fit small folds one after another: one thread each. OpenMP's second thread costs more
    than it gives on a few thousand rows, and on a shared, busy machine its spin-waits made a fold
    4-7x slower (measured); a thread count the candidate sets itself is kept."""
    name = _THREAD_PARAMS.get(candidate.kind)
    if name is None or _THREAD_ALIASES & set(candidate.params):
        return {}
    return {name: 1}


def _pruner(search: SearchParams) -> Any:
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _trial_errors() -> tuple[type[Exception], ...]:
    """What a sampled configuration may raise in a library: that trial fails, the search goes on."""
    import lightgbm
    import xgboost

    return (ValueError, ArithmeticError, lightgbm.basic.LightGBMError, xgboost.core.XGBoostError)


def trial_records(results: Mapping[str, FamilyResult]) -> dict[str, list[dict[str, Any]]]:
    """Every trial per candidate, JSON-ready (the register step logs them)."""
    return {name: [asdict(t) for t in result.trials] for name, result in results.items()}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

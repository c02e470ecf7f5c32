"""Hyperparameter search, the pure part: spaces to suggestions, k-fold scores, budget shares.

The driver (`jobs/search.py`) runs Optuna; everything here is plain Python over numpy so it
can be tested without it. Folds come from the fit rows only: the validation rows stay for
early stopping, the default-vs-searched comparison, calibration and the threshold, and the
holdout for evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from churnops.core.candidates import TrainingData, fit_candidate
from churnops.core.metrics import log_loss, ranking_metrics
from churnops.core.params import CandidateParams, SearchSpace

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int_]
FoldReport = Callable[[int, float], None]  # (fold index, mean score so far); may raise to stop


class OutOfTime(Exception):
    """A trial reached the search deadline before its last fold: its score would be partial."""


class Suggester(Protocol):
    """What `suggest` needs from a trial (an `optuna.Trial` satisfies it)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def suggest(trial: Suggester, space: SearchSpace) -> dict[str, Any]:
    """One value per searched parameter, drawn by the trial's sampler."""
    values: dict[str, Any] = {}
    for name, entry in space.items():
        if entry.choices is not None:
            values[name] = trial.suggest_categorical(name, list(entry.choices))
        elif entry.is_int:
            step = int(entry.step) if entry.step is not None else 1
            values[name] = trial.suggest_int(
                name, int(entry.low or 0), int(entry.high or 0), step=step, log=entry.log
            )
        else:
            low, high = float(entry.low or 0.0), float(entry.high or 0.0)
            step_f = float(entry.step) if entry.step is not None else None
            values[name] = trial.suggest_float(name, low, high, step=step_f, log=entry.log)
    return values


def within(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """The searched parameters among `values` that lie in their ranges (a default or a previous
    champion's configuration to enqueue: the sampler draws the rest)."""
    return {
        name: values[name] for name, entry in space.items() if name in values and entry.contains(values[name])
    }


def with_params(candidate: CandidateParams, values: Mapping[str, Any]) -> CandidateParams:
    """The candidate with searched values over its fixed parameters."""
    return candidate.model_copy(update={"params": dict(candidate.params) | dict(values)})


def shares(names: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """Each family's fraction of the search budget (its weight over the total, 1.0 when unweighted)."""
    raw = {name: float(weights.get(name, 1.0)) for name in names}
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


def family_budget(remaining: float, share: float, later_shares: float) -> float:
    """Seconds for the next family: its share of what is left, so time a family leaves unused
    goes to the families after it."""
    return max(0.0, remaining) * share / (share + later_shares)


def fold_indices(
    y: IntArray, folds: int, seed: int, max_rows: int
) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """Stratified k-fold (train, test) indices into `y`, over a stratified sample of `max_rows`."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    rows = np.arange(len(y))
    if len(rows) > max_rows:
        rows, _ = train_test_split(rows, train_size=max_rows, stratify=y, random_state=seed)
        rows = np.sort(rows)
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(rows[a], rows[b]) for a, b in kfold.split(rows, y[rows])]


def score(metric: str, y: IntArray, proba: FloatArray) -> float:
    """The selection metric on one labelled set (log loss is lower-better; the others higher)."""
    if metric == "log_loss":
        return log_loss(y, proba)
    return float(ranking_metrics(y, proba)[metric])


def score_folds(
    candidate: CandidateParams,
    x: FloatArray,
    y: IntArray,
    folds: Sequence[tuple[NDArray[np.intp], NDArray[np.intp]]],
    metric: str,
    deadline: float,
    report: FoldReport | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Fit on each fold's train rows (boosters stop early on its test rows), score its test rows.

    Raises OutOfTime when the deadline comes before the last fold is scored; `report` sees the
    running mean after each fold (a pruner raises there to stop a poor trial early).
    """
    values: list[float] = []
    for index, (train, test) in enumerate(folds):
        if clock() >= deadline:
            raise OutOfTime(f"{candidate.name}: deadline before fold {index + 1} of {len(folds)}")
        data = TrainingData(x[train], y[train], x[test], y[test])
        trained = fit_candidate(candidate, data, deadline)
        if trained.stopped_by_budget:
            raise OutOfTime(f"{candidate.name}: deadline during fold {index + 1} of {len(folds)}")
        value = score(metric, y[test], trained.classifier.predict_proba(x[test]))
        values.append(value if math.isfinite(value) else math.nan)
        if report is not None:
            report(index, float(np.nanmean(values)))
    return values


def better(metric: str, new: float, old: float) -> bool:
    """Whether `new` beats `old` on `metric` (NaN never wins)."""
    if math.isnan(new):
        return False
    if math.isnan(old):
        return True
    return new < old if metric == "log_loss" else new > old

"""Candidate classifiers: fit with early stopping inside a wall-clock budget, predict, explain.

Each wrapper keeps the native model (sklearn estimator, LightGBM or XGBoost
booster) so the serving hot path can call it on a numpy row without pandas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from churnops.core.params import CandidateParams

FloatArray = NDArray[np.float64]
# The training budget's clock (a module attribute so a test can run out of budget at a chosen round).
_clock: Callable[[], float] = time.perf_counter


class Classifier(Protocol):
    """What evaluation, the pyfunc model and the scorer need from a fitted model."""

    kind: str

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """Churn probability per row."""
        ...

    def contributions(self, features: FloatArray) -> FloatArray:
        """Per-row, per-output-column contribution to the log-odds (bias column dropped)."""
        ...

    def importance(self) -> FloatArray:
        """Global importance per output column (non-negative)."""
        ...


@dataclass
class LinearClassifier:
    """Standardised logistic regression; contributions are coefficient x standardised value."""

    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float
    kind: str = "logistic_regression"

    def _decision(self, features: FloatArray) -> FloatArray:
        return np.asarray(
            ((features - self.mean) / self.scale) @ self.coef + self.intercept, dtype=np.float64
        )

    def predict_proba(self, features: FloatArray) -> FloatArray:
        return np.asarray(1.0 / (1.0 + np.exp(-self._decision(features))), dtype=np.float64)

    def margin(self, features: FloatArray) -> FloatArray:
        """Log-odds per row."""
        return self._decision(features)

    def contributions(self, features: FloatArray) -> FloatArray:
        return np.asarray(((features - self.mean) / self.scale) * self.coef, dtype=np.float64)

    def importance(self) -> FloatArray:
        return np.abs(self.coef)


@dataclass
class LightGBMClassifier:
    """A native LightGBM booster truncated at its best iteration."""

    booster: Any
    best_iteration: int
    kind: str = "lightgbm"

    def predict_proba(self, features: FloatArray) -> FloatArray:
        return np.asarray(self.booster.predict(features, num_iteration=self.best_iteration), dtype=np.float64)

    def margin(self, features: FloatArray) -> FloatArray:
        """Log-odds per row (the raw score; churnops never sets LightGBM's `sigmoid` away from 1)."""
        raw = self.booster.predict(features, num_iteration=self.best_iteration, raw_score=True)
        return np.asarray(raw, dtype=np.float64)

    def contributions(self, features: FloatArray) -> FloatArray:
        raw = self.booster.predict(features, num_iteration=self.best_iteration, pred_contrib=True)
        return np.asarray(raw, dtype=np.float64)[:, :-1]

    def importance(self) -> FloatArray:
        gain = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        return np.asarray(gain, dtype=np.float64)


@dataclass
class XGBoostClassifier:
    """A native XGBoost booster limited to its best iteration."""

    booster: Any
    best_iteration: int
    n_features: int
    kind: str = "xgboost"

    def _matrix(self, features: FloatArray) -> Any:
        import xgboost as xgb

        return xgb.DMatrix(features, missing=np.nan)

    def predict_proba(self, features: FloatArray) -> FloatArray:
        out = self.booster.predict(self._matrix(features), iteration_range=(0, self.best_iteration))
        return np.asarray(out, dtype=np.float64)

    def margin(self, features: FloatArray) -> FloatArray:
        """Log-odds per row."""
        out = self.booster.predict(
            self._matrix(features), output_margin=True, iteration_range=(0, self.best_iteration)
        )
        return np.asarray(out, dtype=np.float64)

    def contributions(self, features: FloatArray) -> FloatArray:
        raw = self.booster.predict(
            self._matrix(features), pred_contribs=True, iteration_range=(0, self.best_iteration)
        )
        return np.asarray(raw, dtype=np.float64)[:, :-1]

    def importance(self) -> FloatArray:
        scores = self.booster.get_score(importance_type="gain")
        return np.array([scores.get(f"f{i}", 0.0) for i in range(self.n_features)], dtype=np.float64)


@dataclass(frozen=True)
class TrainedCandidate:
    """A fitted candidate and how its training went."""

    name: str
    classifier: Classifier
    seconds: float
    best_iteration: int | None = None
    stopped_by_budget: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    config: CandidateParams | None = None  # the parameters it was fitted with (searched or default)


@dataclass(frozen=True)
class TrainingData:
    """Fit and early-stopping sets, already transformed."""

    x_fit: FloatArray
    y_fit: NDArray[np.int_]
    x_val: FloatArray
    y_val: NDArray[np.int_]


def fit_candidate(candidate: CandidateParams, data: TrainingData, deadline: float) -> TrainedCandidate:
    """Fit one candidate; gradient boosting stops early on the validation set or at the deadline."""
    started = time.perf_counter()
    classifier, best_iteration, by_budget = _FITTERS[candidate.kind](candidate, data, deadline)
    return TrainedCandidate(
        name=candidate.name,
        classifier=classifier,
        seconds=time.perf_counter() - started,
        best_iteration=best_iteration,
        stopped_by_budget=by_budget,
        config=candidate,
    )


def refit_fixed(
    candidate: CandidateParams, best_iteration: int | None, x: FloatArray, y: NDArray[np.int_]
) -> Classifier:
    """Refit with the iteration count found by early stopping (for cross-validation)."""
    params = candidate.params | ({"n_estimators": best_iteration} if best_iteration else {})
    fixed = candidate.model_copy(update={"params": params, "early_stopping_rounds": None})
    empty = np.empty((0, x.shape[1]), dtype=np.float64)
    data = TrainingData(x, y, empty, np.empty(0, dtype=np.int_))
    classifier, _, _ = _FITTERS[candidate.kind](fixed, data, float("inf"))
    return classifier


def _fit_logreg(
    candidate: CandidateParams, data: TrainingData, deadline: float
) -> tuple[Classifier, None, bool]:
    from sklearn.linear_model import LogisticRegression

    mean = data.x_fit.mean(axis=0)
    scale = data.x_fit.std(axis=0)
    scale[scale == 0] = 1.0  # constant columns: keep them finite, they get a zero coefficient
    model = LogisticRegression(**candidate.params)
    model.fit((data.x_fit - mean) / scale, data.y_fit)
    classifier = LinearClassifier(
        mean=mean, scale=scale, coef=model.coef_[0].astype(np.float64), intercept=float(model.intercept_[0])
    )
    return classifier, None, False


class _LightGBMDeadline:
    """Ends LightGBM training once the wall-clock budget is spent, keeping the best validation
    round so far (what early stopping would have kept), not every round trained."""

    order = 40  # after LightGBM's own early stopping (30)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.best_iteration = -1
        self.best_score = math.nan
        self.best_results: list[Any] = []

    def __call__(self, env: Any) -> None:
        if env.evaluation_result_list:  # (dataset, metric, value, higher is better, ...) per metric
            _, _, score, higher_better = env.evaluation_result_list[0][:4]
            better = score > self.best_score if higher_better else score < self.best_score
            if self.best_iteration < 0 or better:
                self.best_iteration, self.best_score = env.iteration, score
                self.best_results = list(env.evaluation_result_list)
        if _clock() > self.deadline:
            import lightgbm as lgb

            best = self.best_iteration if self.best_iteration >= 0 else env.iteration
            raise lgb.callback.EarlyStopException(best, self.best_results or env.evaluation_result_list)


def _fit_lightgbm(
    candidate: CandidateParams, data: TrainingData, deadline: float
) -> tuple[Classifier, int, bool]:
    import lightgbm as lgb

    params = {"objective": "binary", "metric": "auc", "verbosity": -1, "seed": 0} | dict(candidate.params)
    rounds = int(str(params.pop("n_estimators", 500)))
    train_set = lgb.Dataset(data.x_fit, label=data.y_fit, free_raw_data=True)
    callbacks: list[Any] = [_LightGBMDeadline(deadline)]
    valid_sets: list[Any] = []
    if candidate.early_stopping_rounds and len(data.y_val):
        valid_sets = [lgb.Dataset(data.x_val, label=data.y_val, reference=train_set)]
        callbacks.append(lgb.early_stopping(candidate.early_stopping_rounds, verbose=False))
    booster = lgb.train(params, train_set, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
    best = booster.best_iteration or booster.current_iteration()
    stopped = _clock() > deadline
    return LightGBMClassifier(booster=booster, best_iteration=best), best, stopped


class _XGBDeadline:
    """XGBoost callback that ends training once the wall-clock budget is spent."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self) -> Any:
        import xgboost as xgb

        deadline = self.deadline

        class _Callback(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                return _clock() > deadline

        return _Callback()


def _fit_xgboost(
    candidate: CandidateParams, data: TrainingData, deadline: float
) -> tuple[Classifier, int, bool]:
    import xgboost as xgb

    params = {"objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist", "seed": 0}
    params |= dict(candidate.params)
    rounds = int(str(params.pop("n_estimators", 500)))
    train = xgb.DMatrix(data.x_fit, label=data.y_fit, missing=np.nan)
    evals: list[Any] = []
    stopping = None
    if candidate.early_stopping_rounds and len(data.y_val):
        evals = [(xgb.DMatrix(data.x_val, label=data.y_val, missing=np.nan), "validation")]
        stopping = candidate.early_stopping_rounds
    booster = xgb.train(
        params,
        train,
        num_boost_round=rounds,
        evals=evals,
        early_stopping_rounds=stopping,
        callbacks=[_XGBDeadline(deadline)()],
        verbose_eval=False,
    )
    # No best_iteration when the deadline ended training in the first round: the early-stopping
    # callback never ran (XGBoost stops calling callbacks once one asks to stop).
    marked = booster.attr("best_iteration") if stopping else None
    best = int(marked) + 1 if marked is not None else booster.num_boosted_rounds()
    stopped = _clock() > deadline
    classifier = XGBoostClassifier(booster=booster, best_iteration=best, n_features=data.x_fit.shape[1])
    return classifier, best, stopped


# Candidate kind -> fitter (defined last: the fitters above are module functions).
Fitter = Callable[[CandidateParams, TrainingData, float], tuple[Classifier, int | None, bool]]
_FITTERS: dict[str, Fitter] = {
    "logistic_regression": _fit_logreg,
    "lightgbm": _fit_lightgbm,
    "xgboost": _fit_xgboost,
}

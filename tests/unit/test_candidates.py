"""Candidate classifiers: fit, early stopping, budget, contributions, importance, refit, pickling."""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from churnops.core.candidates import (
    LightGBMClassifier,
    LinearClassifier,
    TrainedCandidate,
    TrainingData,
    XGBoostClassifier,
    fit_candidate,
    refit_fixed,
)
from churnops.core.params import CandidateParams

pytestmark = pytest.mark.unit

N_FEATURES = 6
NO_DEADLINE = float("inf")

CANDIDATES = {
    "logistic_regression": CandidateParams(
        name="logreg", kind="logistic_regression", params={"C": 1.0, "max_iter": 500}
    ),
    "lightgbm": CandidateParams(
        name="lgbm",
        kind="lightgbm",
        params={"n_estimators": 300, "learning_rate": 0.1, "num_leaves": 15, "num_threads": 1},
        early_stopping_rounds=20,
    ),
    "xgboost": CandidateParams(
        name="xgb",
        kind="xgboost",
        params={"n_estimators": 300, "learning_rate": 0.1, "max_depth": 4, "nthread": 1},
        early_stopping_rounds=20,
    ),
}


def make_data(signal: float = 1.0, rows: int = 3_000, seed: int = 0) -> TrainingData:
    """A learnable problem: the log-odds depend on features 0-2; features 3-5 are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 2] = x[:, 2] * 10 + 50  # a feature on another scale, to make standardisation matter
    logit = signal * (2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.15 * (x[:, 2] - 50) - 0.5)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int_)
    cut = rows * 2 // 3
    return TrainingData(x[:cut], y[:cut], x[cut:], y[cut:])


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return make_data()


@pytest.fixture(scope="module")
def trained(data: TrainingData) -> dict[str, TrainedCandidate]:
    return {kind: fit_candidate(candidate, data, NO_DEADLINE) for kind, candidate in CANDIDATES.items()}


@pytest.mark.parametrize("kind", list(CANDIDATES))
def test_each_kind_learns_the_signal(
    trained: dict[str, TrainedCandidate], data: TrainingData, kind: str
) -> None:
    result = trained[kind]
    assert result.classifier.kind == kind
    assert result.name == CANDIDATES[kind].name
    assert not result.stopped_by_budget
    assert result.seconds > 0
    proba = result.classifier.predict_proba(data.x_val)
    assert proba.shape == (len(data.y_val),)
    assert ((proba > 0) & (proba < 1)).all()
    assert roc_auc_score(data.y_val, proba) > 0.8


def test_wrapper_types(trained: dict[str, TrainedCandidate]) -> None:
    assert isinstance(trained["logistic_regression"].classifier, LinearClassifier)
    assert isinstance(trained["lightgbm"].classifier, LightGBMClassifier)
    assert isinstance(trained["xgboost"].classifier, XGBoostClassifier)
    assert trained["logistic_regression"].best_iteration is None


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_early_stopping_on_a_weak_signal(kind: str) -> None:
    result = fit_candidate(CANDIDATES[kind], make_data(signal=0.05, seed=1), NO_DEADLINE)
    assert result.best_iteration is not None
    assert result.best_iteration < CANDIDATES[kind].params["n_estimators"]
    assert result.classifier.best_iteration == result.best_iteration  # type: ignore[attr-defined]
    assert not result.stopped_by_budget


def test_without_early_stopping_all_rounds_are_kept(data: TrainingData) -> None:
    candidate = CANDIDATES["lightgbm"].model_copy(
        update={"params": CANDIDATES["lightgbm"].params | {"n_estimators": 25}, "early_stopping_rounds": None}
    )
    assert fit_candidate(candidate, data, NO_DEADLINE).best_iteration == 25


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_deadline_in_the_past_stops_at_the_first_round(data: TrainingData, kind: str) -> None:
    result = fit_candidate(CANDIDATES[kind], data, time.perf_counter() - 1.0)
    assert result.stopped_by_budget
    assert result.best_iteration is not None
    assert 1 <= result.best_iteration <= 2
    # A one-round model still predicts.
    assert result.classifier.predict_proba(data.x_val[:5]).shape == (5,)


def test_linear_contributions_are_coefficient_times_standardised_value(
    trained: dict[str, TrainedCandidate], data: TrainingData
) -> None:
    classifier = trained["logistic_regression"].classifier
    assert isinstance(classifier, LinearClassifier)
    mean, std = data.x_fit.mean(axis=0), data.x_fit.std(axis=0)
    reference = LogisticRegression(C=1.0, max_iter=500).fit((data.x_fit - mean) / std, data.y_fit)
    np.testing.assert_allclose(classifier.coef, reference.coef_[0], rtol=1e-6)

    x = data.x_val[:50]
    contributions = classifier.contributions(x)
    assert contributions.shape == (50, N_FEATURES)
    np.testing.assert_allclose(contributions, reference.coef_[0] * (x - mean) / std, rtol=1e-6, atol=1e-9)
    logit = contributions.sum(axis=1) + classifier.intercept
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), classifier.predict_proba(x), rtol=1e-9)
    np.testing.assert_allclose(classifier.predict_proba(x), reference.predict_proba((x - mean) / std)[:, 1])


def test_linear_constant_column_stays_finite(data: TrainingData) -> None:
    x_fit = data.x_fit.copy()
    x_fit[:, 4] = 3.0
    constant = TrainingData(x_fit, data.y_fit, data.x_val, data.y_val)
    classifier = fit_candidate(CANDIDATES["logistic_regression"], constant, NO_DEADLINE).classifier
    assert np.isfinite(classifier.predict_proba(data.x_val)).all()
    assert np.isfinite(classifier.contributions(data.x_val)).all()


def test_lightgbm_contributions_reproduce_the_raw_margin(
    trained: dict[str, TrainedCandidate], data: TrainingData
) -> None:
    classifier = trained["lightgbm"].classifier
    assert isinstance(classifier, LightGBMClassifier)
    x = data.x_val[:100]
    contributions = classifier.contributions(x)
    assert contributions.shape == (100, N_FEATURES)
    best = classifier.best_iteration
    expected_value = classifier.booster.predict(x, num_iteration=best, pred_contrib=True)[:, -1]
    assert np.allclose(expected_value, expected_value[0])  # one expected value for every row
    margin = classifier.booster.predict(x, num_iteration=best, raw_score=True)
    np.testing.assert_allclose(contributions.sum(axis=1) + expected_value[0], margin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), classifier.predict_proba(x), rtol=1e-6)


def test_xgboost_contributions_reproduce_the_raw_margin(
    trained: dict[str, TrainedCandidate], data: TrainingData
) -> None:
    import xgboost as xgb

    classifier = trained["xgboost"].classifier
    assert isinstance(classifier, XGBoostClassifier)
    x = data.x_val[:100]
    contributions = classifier.contributions(x)
    assert contributions.shape == (100, N_FEATURES)
    margin = classifier.booster.predict(
        xgb.DMatrix(x), output_margin=True, iteration_range=(0, classifier.best_iteration)
    )
    bias = classifier.booster.predict(
        xgb.DMatrix(x), pred_contribs=True, iteration_range=(0, classifier.best_iteration)
    )[:, -1]
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, margin, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", list(CANDIDATES))
def test_importance_is_per_feature_non_negative_and_finds_the_signal(
    trained: dict[str, TrainedCandidate], kind: str
) -> None:
    importance = trained[kind].classifier.importance()
    assert importance.shape == (N_FEATURES,)
    assert (importance >= 0).all()
    # Features 0 and 1 carry the strongest signal, 3-5 none.
    assert min(importance[0], importance[1]) > max(importance[3:])


@pytest.mark.parametrize(("kind", "rounds"), [("lightgbm", 7), ("xgboost", 9)])
def test_refit_fixed_uses_the_given_iteration_count(data: TrainingData, kind: str, rounds: int) -> None:
    classifier: Any = refit_fixed(CANDIDATES[kind], rounds, data.x_fit, data.y_fit)
    assert classifier.kind == kind
    assert classifier.best_iteration == rounds
    if kind == "lightgbm":
        assert classifier.booster.current_iteration() == rounds
    else:
        assert classifier.booster.num_boosted_rounds() == rounds
    assert roc_auc_score(data.y_val, classifier.predict_proba(data.x_val)) > 0.75


def test_refit_fixed_without_iteration_uses_n_estimators(data: TrainingData) -> None:
    candidate = CANDIDATES["lightgbm"].model_copy(
        update={"params": CANDIDATES["lightgbm"].params | {"n_estimators": 12}}
    )
    classifier: Any = refit_fixed(candidate, None, data.x_fit, data.y_fit)
    assert classifier.booster.current_iteration() == 12


def test_refit_fixed_logistic_regression(data: TrainingData) -> None:
    classifier = refit_fixed(CANDIDATES["logistic_regression"], None, data.x_fit, data.y_fit)
    assert isinstance(classifier, LinearClassifier)
    assert roc_auc_score(data.y_val, classifier.predict_proba(data.x_val)) > 0.8


@pytest.mark.parametrize("kind", list(CANDIDATES))
def test_pickle_round_trip_predicts_identically(
    trained: dict[str, TrainedCandidate], data: TrainingData, kind: str
) -> None:
    classifier = trained[kind].classifier
    restored = pickle.loads(pickle.dumps(classifier))
    x: NDArray[np.float64] = data.x_val
    np.testing.assert_array_equal(restored.predict_proba(x), classifier.predict_proba(x))
    np.testing.assert_array_equal(restored.contributions(x[:20]), classifier.contributions(x[:20]))


def test_lightgbm_out_of_budget_keeps_the_best_round_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the budget runs out mid-training, LightGBM keeps the best validation round so far
    (what early stopping would keep), not every round trained. The budget's clock runs out at the
    16th round (a real deadline cannot be hit at a chosen round)."""
    from churnops.core import candidates

    data = make_data(signal=0.1, seed=3)
    candidate = CANDIDATES["lightgbm"].model_copy(
        update={"params": CANDIDATES["lightgbm"].params | {"learning_rate": 0.5, "num_leaves": 31}}
    )
    calls = iter(range(10**6))
    monkeypatch.setattr(candidates, "_clock", lambda: 0.0 if next(calls) < 15 else 2.0)
    result = fit_candidate(candidate, data, deadline=1.0)
    assert result.stopped_by_budget
    # The same 16 rounds without a budget (deterministic: one thread, fixed seed), scored per round.
    monkeypatch.setattr(candidates, "_clock", lambda: 0.0)
    sixteen = candidate.model_copy(update={"params": candidate.params | {"n_estimators": 16}})
    reference = fit_candidate(sixteen, data, deadline=1.0).classifier.booster  # type: ignore[attr-defined]
    aucs = [roc_auc_score(data.y_val, reference.predict(data.x_val, num_iteration=i)) for i in range(1, 17)]
    best = int(np.argmax(aucs)) + 1
    assert best < 16  # the problem overfits early: keeping every round would be wrong
    assert result.best_iteration == best
    assert result.classifier.best_iteration == best  # type: ignore[attr-defined]

"""Hyperparameter search: spaces, folds on the fit rows only, the budget, trial 0, warm start,
pruning and patience; and bad spaces are refused, naming the entry, before anything trains."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import optuna
import pytest

from churnops.core.candidates import TrainingData
from churnops.core.features import FeatureTransformer
from churnops.core.params import (
    CandidateParams,
    Params,
    SearchParams,
    SearchRange,
    TrainingParams,
    parse_params,
    with_search,
)
from churnops.core.search import (
    OutOfTime,
    family_budget,
    fold_indices,
    score_folds,
    shares,
    suggest,
    within,
)
from churnops.core.synthetic import generate_customers
from churnops.errors import ConfigError
from churnops.io.datasets import load_spec
from churnops.jobs.search import run_search

pytestmark = pytest.mark.unit

LOGREG = CandidateParams(name="logreg", kind="logistic_regression", params={"C": 1.0, "max_iter": 300})
LGBM = CandidateParams(
    name="lgbm",
    kind="lightgbm",
    params={"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15},
    early_stopping_rounds=10,
)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    spec = load_spec("synthetic")
    frame = generate_customers(2500, seed=3)
    transformer = FeatureTransformer(spec, Params().features).fit(frame)
    x = transformer.transform(frame)
    y = frame[spec.target.column].map(spec.is_positive).to_numpy(dtype=np.int_)
    return TrainingData(x[:2000], y[:2000], x[2000:], y[2000:])


# -- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "entry", "message"),
    [
        ("{budget_seconds: 0}", "training.search.budget_seconds", "greater than 0"),
        ("{spaces: {lightgbm: {leaves: {low: 2, high: 8}}}}", "lightgbm.leaves", "unknown parameter"),
        ("{spaces: {xgboost: {max_depth: {low: 8, high: 2}}}}", "xgboost.max_depth", "empty range"),
        ("{spaces: {lightgbm: {bagging_freq: {choices: []}}}}", "lightgbm.bagging_freq", "empty range"),
        (
            "{spaces: {logistic_regression: {C: {low: 0, high: 1, log: true}}}}",
            "logistic_regression.C",
            "low > 0",
        ),
        ("{spaces: {catboost: {depth: {low: 2, high: 8}}}}", "spaces.catboost", "lightgbm"),
        ("{shares: {lightgbm: 0}}", "lightgbm", "share must be > 0"),
    ],
)
def test_a_bad_search_entry_is_one_clear_error_naming_it(search: str, entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_params(f"training: {{search: {search}}}", source="my.yaml")
    text = str(raised.value)
    assert text.startswith("my.yaml: training.search")
    assert entry in text
    assert message in text
    assert "\n" not in text


def test_ranges_are_int_or_float_by_their_bounds() -> None:
    assert SearchRange(low=7, high=127, log=True).is_int
    assert not SearchRange(low=0.5, high=1).is_int
    assert SearchRange(low=2, high=10).contains(5)
    assert not SearchRange(low=2, high=10).contains(5.5)
    assert not SearchRange(low=2, high=10).contains(11)
    assert SearchRange(choices=(1, "balanced")).contains("balanced")


def test_search_switch() -> None:
    params = Params()
    assert params.training.search.enabled
    off = with_search(params, False)
    assert not off.training.search.enabled
    assert off.training.candidates == params.training.candidates
    assert with_search(off, True) == params


# -- the pure part ---------------------------------------------------------------------------


def test_suggestions_stay_in_their_ranges() -> None:
    space = SearchParams().spaces["lightgbm"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        values = suggest(study.ask(), space)
        assert set(values) == set(space)
        for name, value in values.items():
            assert space[name].contains(value), (name, value)
        assert isinstance(values["num_leaves"], int)


def test_within_keeps_the_searched_values_in_range() -> None:
    space = {"C": SearchRange(low=0.01, high=10.0, log=True)}
    assert within(space, {"C": 1.0, "max_iter": 300}) == {"C": 1.0}
    assert within(space, {"C": 50.0}) == {}


def test_unused_time_goes_to_the_later_families() -> None:
    weights = shares(["logreg", "lightgbm", "xgboost"], {"logreg": 1.0, "lightgbm": 2.0, "xgboost": 2.0})
    assert family_budget(100.0, weights["logreg"], weights["lightgbm"] + weights["xgboost"]) == pytest.approx(
        20
    )
    # logreg finished after 5 s: lightgbm gets half of the 95 s left, not 40.
    assert family_budget(95.0, weights["lightgbm"], weights["xgboost"]) == pytest.approx(47.5)
    assert family_budget(10.0, weights["xgboost"], 0.0) == pytest.approx(10.0)
    assert family_budget(-1.0, weights["xgboost"], 0.0) == 0.0


def test_folds_cover_a_stratified_sample_of_the_given_rows() -> None:
    y = (np.random.default_rng(0).random(5000) < 0.25).astype(np.int_)
    folds = fold_indices(y, 3, seed=1, max_rows=1200)
    tests = np.concatenate([test for _, test in folds])
    assert len(folds) == 3
    assert len(tests) == len(set(tests.tolist())) == 1200
    for train, test in folds:
        assert set(train.tolist()).isdisjoint(test.tolist())
        assert abs(y[test].mean() - y.mean()) < 0.02


def test_score_folds_stops_at_the_deadline(data: TrainingData) -> None:
    folds = fold_indices(data.y_fit, 3, seed=1, max_rows=2000)
    with pytest.raises(OutOfTime, match="before fold 1"):
        score_folds(LOGREG, data.x_fit, data.y_fit, folds, "roc_auc", deadline=time.perf_counter() - 1)
    ticks = iter([0.0, 0.0, 5.0])  # the clock passes the deadline after the second fold
    with pytest.raises(OutOfTime, match="before fold 3"):
        score_folds(LOGREG, data.x_fit, data.y_fit, folds, "roc_auc", 1.0, clock=lambda: next(ticks))
    seen: list[tuple[int, float]] = []
    scores = score_folds(
        LOGREG, data.x_fit, data.y_fit, folds, "roc_auc", float("inf"), lambda *a: seen.append(a)
    )
    assert len(scores) == 3
    assert all(0.7 < s < 1 for s in scores)
    assert [fold for fold, _ in seen] == [0, 1, 2]
    assert seen[-1][1] == pytest.approx(np.mean(scores))


# -- the Optuna driver -----------------------------------------------------------------------


def _training(**search: Any) -> TrainingParams:
    return TrainingParams(candidates=(LOGREG, LGBM), search=SearchParams(**search))


def test_search_starts_from_the_defaults_and_the_champion_and_ends_on_time(data: TrainingData) -> None:
    budget = 4.0
    warm = {"lightgbm": {"num_leaves": 9, "learning_rate": 0.08, "min_child_samples": 30}}
    started = time.perf_counter()
    results = run_search(_training(budget_seconds=budget, patience=None), data, started + budget, warm)
    elapsed = time.perf_counter() - started
    assert elapsed < budget + 1.0
    assert set(results) == {"logreg", "lgbm"}
    lgbm = results["lgbm"]
    first, second = lgbm.trials[0], lgbm.trials[1]
    assert first.source == "default"
    assert first.params == {"learning_rate": 0.1, "num_leaves": 15}  # the searched ones among the defaults
    assert second.source == "champion"
    assert second.params == {"num_leaves": 9, "learning_rate": 0.08, "min_child_samples": 30}
    assert {t.source for t in lgbm.trials[2:]} <= {"sampled"}
    for result in results.values():
        assert result.seconds <= result.budget_seconds + 0.5
        assert result.default_value is not None
        assert result.best_value is not None
        assert result.best_value >= result.default_value  # trial 0 is in the race
        assert {t.state for t in result.trials} <= {"complete", "pruned", "out_of_time", "failed"}
        complete = [t for t in result.trials if t.state == "complete"]
        assert all(len(t.folds) == 3 and t.value == pytest.approx(np.mean(t.folds)) for t in complete)
    assert results["logreg"].budget_seconds < lgbm.budget_seconds  # shares 1 : 2


def test_a_family_that_stops_improving_stops_early(data: TrainingData) -> None:
    search = {
        "budget_seconds": 30.0,
        "patience": 3,
        "spaces": {"logistic_regression": {"C": {"choices": [1.0]}}},
    }
    started = time.perf_counter()
    results = run_search(
        TrainingParams(candidates=(LOGREG,), search=SearchParams.model_validate(search)), data, started + 30
    )
    result = results["logreg"]
    assert result.stopped == "patience"
    assert len(result.trials) == 4  # trial 0 sets the best, three more without improvement
    assert time.perf_counter() - started < 10


def test_max_trials_caps_each_family(data: TrainingData) -> None:
    results = run_search(_training(budget_seconds=30.0, max_trials=3), data, time.perf_counter() + 30)
    assert [len(r.trials) for r in results.values()] == [3, 3]
    assert {r.stopped for r in results.values()} == {"max_trials"}


def test_poor_trials_are_pruned_after_a_fold(data: TrainingData) -> None:
    """With the median pruner a trial below the median after its first fold stops there."""
    space = {"learning_rate": {"low": 0.001, "high": 0.3, "log": True}, "num_leaves": {"low": 2, "high": 64}}
    search = SearchParams.model_validate(
        {"budget_seconds": 60.0, "max_trials": 25, "patience": None, "spaces": {"lightgbm": space}}
    )
    results = run_search(TrainingParams(candidates=(LGBM,), search=search), data, time.perf_counter() + 60)
    pruned = [t for t in results["lgbm"].trials if t.state == "pruned"]
    assert pruned
    assert all(len(t.folds) == 0 and t.value is None for t in pruned)


def test_the_champions_logged_params_become_a_warm_start() -> None:
    """MLflow keeps params as strings: numbers, booleans and text come back as they were logged;
    a blend champion warm-starts each member's family."""
    from churnops.jobs.train import champion_params

    single = {"kind": "lightgbm", "model.num_leaves": "31", "model.learning_rate": "0.05", "split.seed": "42"}
    assert champion_params(single) == {"lightgbm": {"num_leaves": 31, "learning_rate": 0.05}}
    blended = {
        "kind": "blend",
        "blend.logreg": "0.4",
        "member.logreg.kind": "logistic_regression",
        "member.logreg.C": "0.5",
        "member.logreg.class_weight": "balanced",
        "member.xgb.kind": "xgboost",
        "member.xgb.max_depth": "4",
        "member.xgb.extra": "True",
    }
    assert champion_params(blended) == {
        "logistic_regression": {"C": 0.5, "class_weight": "balanced"},
        "xgboost": {"max_depth": 4, "extra": True},
    }
    assert champion_params({}) == {}


def test_too_few_rows_of_a_class_for_the_folds_skip_the_search(data: TrainingData) -> None:
    y = data.y_fit.copy()
    y[:] = 0
    y[:2] = 1  # two churners: three stratified folds cannot be drawn
    tiny = TrainingData(data.x_fit, y, data.x_val, data.y_val)
    assert run_search(_training(budget_seconds=5.0), tiny, time.perf_counter() + 5) == {}

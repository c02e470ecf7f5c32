"""FastModel: compiled scoring and path attributions agree with each library's own predict."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from numpy.typing import NDArray

from churnops.core.blend import BlendClassifier
from churnops.core.calibration import calibrated, fit_calibration
from churnops.core.candidates import (
    Classifier,
    LightGBMClassifier,
    LinearClassifier,
    TrainingData,
    XGBoostClassifier,
    fit_candidate,
)
from churnops.core.fast_layout import _float32_less_as_le, _source_weights
from churnops.core.fast_model import FastModel
from churnops.core.features import FeatureTransformer
from churnops.core.params import CandidateParams, Params
from churnops.core.spec import DatasetSpec
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec

pytestmark = pytest.mark.unit

KINDS = ("logistic_regression", "lightgbm", "xgboost")
PROBA_TOLERANCE = {"logistic_regression": 1e-12, "lightgbm": 1e-9, "xgboost": 1e-6}
MARGIN_TOLERANCE = {"logistic_regression": 1e-12, "lightgbm": 1e-9, "xgboost": 1e-5}
CANDIDATES = {
    "logistic_regression": CandidateParams(
        name="logreg", kind="logistic_regression", params={"max_iter": 500}
    ),
    "lightgbm": CandidateParams(
        name="lgbm",
        kind="lightgbm",
        params={"n_estimators": 80, "learning_rate": 0.1, "num_leaves": 15, "num_threads": 1},
        early_stopping_rounds=10,
    ),
    "xgboost": CandidateParams(
        name="xgb",
        kind="xgboost",
        params={"n_estimators": 80, "learning_rate": 0.1, "max_depth": 4, "nthread": 1},
        early_stopping_rounds=10,
    ),
}


@dataclass(frozen=True)
class Prepared:
    spec: DatasetSpec
    transformer: FeatureTransformer
    x: NDArray[np.float64]
    y: NDArray[np.int_]


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    spec = load_spec("synthetic")
    frame = generate_customers(3000, seed=1)
    transformer = FeatureTransformer(spec, Params().features).fit(frame)
    y = frame[spec.target.column].map(spec.is_positive).to_numpy(dtype=np.int_)
    return Prepared(spec, transformer, transformer.transform(frame), y)


@pytest.fixture(scope="module")
def models(prepared: Prepared) -> dict[str, tuple[Classifier, FastModel]]:
    x, y = prepared.x, prepared.y
    data = TrainingData(x[:2000], y[:2000], x[2000:], y[2000:])
    built = {}
    for kind, candidate in CANDIDATES.items():
        classifier = fit_candidate(candidate, data, float("inf")).classifier
        fast = FastModel.build(classifier, prepared.transformer.output_sources, prepared.spec.feature_columns)
        fast.warm_up()
        built[kind] = (classifier, fast)
    return built


def raw_margin(classifier: Classifier, x: NDArray[np.float64]) -> NDArray[np.float64]:
    if isinstance(classifier, LinearClassifier):
        return ((x - classifier.mean) / classifier.scale) @ classifier.coef + classifier.intercept
    if isinstance(classifier, LightGBMClassifier):
        raw = classifier.booster.predict(x, num_iteration=classifier.best_iteration, raw_score=True)
        return np.asarray(raw, dtype=np.float64)
    assert isinstance(classifier, XGBoostClassifier)
    matrix = xgb.DMatrix(x, missing=np.nan)
    margin = classifier.booster.predict(
        matrix, output_margin=True, iteration_range=(0, classifier.best_iteration)
    )
    return np.asarray(margin, dtype=np.float64)


def used_outputs(classifier: Classifier) -> set[int]:
    if isinstance(classifier, LinearClassifier):
        return set(np.flatnonzero(classifier.coef).tolist())
    if isinstance(classifier, LightGBMClassifier):
        splits = classifier.booster.feature_importance("split", iteration=classifier.best_iteration)
        return set(np.flatnonzero(splits).tolist())
    assert isinstance(classifier, XGBoostClassifier)
    scores = classifier.booster[: classifier.best_iteration].get_score(importance_type="weight")
    return {int(name[1:]) for name in scores}


@pytest.mark.parametrize("kind", KINDS)
def test_probability_matches_the_classifier_for_every_row(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, kind: str
) -> None:
    classifier, fast = models[kind]
    expected = classifier.predict_proba(prepared.x)
    proba, _ = fast.score_batch(prepared.x)
    singles = np.array([fast.score_one(row)[0] for row in prepared.x])
    assert fast.kind == kind
    np.testing.assert_allclose(proba, expected, rtol=0, atol=PROBA_TOLERANCE[kind])
    np.testing.assert_allclose(singles, expected, rtol=0, atol=PROBA_TOLERANCE[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_bias_plus_contributions_is_the_raw_margin(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, kind: str
) -> None:
    classifier, fast = models[kind]
    _, contributions = fast.score_batch(prepared.x)
    margin = fast.bias + contributions.sum(axis=1)
    np.testing.assert_allclose(
        margin, raw_margin(classifier, prepared.x), rtol=0, atol=MARGIN_TOLERANCE[kind]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_score_one_equals_its_row_of_score_batch(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, kind: str
) -> None:
    _, fast = models[kind]
    proba, contributions = fast.score_batch(prepared.x[:300])
    for i, row in enumerate(prepared.x[:300]):
        one_proba, one_contributions = fast.score_one(row)
        assert one_proba == proba[i]
        np.testing.assert_array_equal(one_contributions, contributions[i])


@pytest.mark.parametrize("kind", KINDS)
def test_score_reasons_equals_score_batch_then_top_reason_codes(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, kind: str
) -> None:
    """The one-thread fused kernel (batch scoring) gives the parallel kernels' answer to the bit,
    rows with missing values included."""
    _, fast = models[kind]
    rows = prepared.x[:500].copy()
    rows[::7, 0] = np.nan
    proba, contributions = fast.score_batch(rows)
    index, top = fast.top_reason_codes(contributions, 3)
    fused = fast.score_reasons(rows, 3)
    np.testing.assert_array_equal(fused[0], proba)
    np.testing.assert_array_equal(fused[1], index)
    np.testing.assert_array_equal(fused[2], top)


HIDDEN = ("gender", "region", "partner")


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_go_only_to_raw_features_the_model_uses(prepared: Prepared, kind: str) -> None:
    sources = prepared.transformer.output_sources
    hidden = [j for j, source in enumerate(sources) if set(source) & set(HIDDEN)]
    x = prepared.x.copy()
    x[:, hidden] = 0.0  # constant outputs: nothing to learn from gender, region and partner
    data = TrainingData(x[:2000], prepared.y[:2000], x[2000:], prepared.y[2000:])
    classifier = fit_candidate(CANDIDATES[kind], data, float("inf")).classifier
    fast = FastModel.build(classifier, sources, prepared.spec.feature_columns)
    usable = {raw for j in used_outputs(classifier) for raw in sources[j]}
    assert usable.isdisjoint(HIDDEN) or kind == "logistic_regression"
    _, contributions = fast.score_batch(x)
    unusable = [i for i, name in enumerate(fast.raw_features) if name not in usable or name in HIDDEN]
    assert {fast.raw_features[i] for i in unusable} >= set(HIDDEN)
    assert np.all(contributions[:, unusable] == 0.0)
    used = [i for i in range(len(fast.raw_features)) if i not in unusable]
    assert np.all(np.any(contributions[:, used] != 0.0, axis=0))


def test_raw_feature_names_come_from_the_spec(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared
) -> None:
    for _, fast in models.values():
        assert fast.raw_features == tuple(prepared.spec.feature_columns)
        _, contributions = fast.score_one(prepared.x[0])
        assert contributions.shape == (len(prepared.spec.feature_columns),)
        names, values = fast.top_reasons_batch(fast.score_batch(prepared.x[:5])[1])
        assert set(names.ravel()) <= set(prepared.spec.feature_columns)
        assert names.shape == values.shape == (5, 3)


def linear(coef: list[float], sources: list[tuple[str, ...]], raw: list[str]) -> FastModel:
    n = len(coef)
    classifier = LinearClassifier(
        mean=np.zeros(n), scale=np.ones(n), coef=np.array(coef, dtype=np.float64), intercept=0.25
    )
    return FastModel.build(classifier, sources, raw)


def test_top_reasons_by_magnitude_then_name() -> None:
    fast = linear([1.0] * 4, [("b",), ("a",), ("c",), ("d",)], ["b", "a", "c", "d"])
    proba, contributions = fast.score_one(np.array([0.5, -0.5, 0.1, -2.0]))
    assert proba == pytest.approx(1 / (1 + np.exp(-(0.25 - 1.9))), abs=1e-12)
    assert fast.top_reasons(contributions) == [("d", -2.0), ("a", -0.5), ("b", 0.5)]
    assert fast.top_reasons(contributions, k=10) == [("d", -2.0), ("a", -0.5), ("b", 0.5), ("c", 0.1)]
    assert fast.top_reasons(contributions, k=1) == [("d", -2.0)]
    with pytest.raises(ValueError, match="k must be"):
        fast.top_reasons(contributions, k=0)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 9])
def test_top_reasons_batch_agrees_with_top_reasons(k: int) -> None:
    raw = ["f", "c", "a", "e", "b", "d"]
    fast = linear([1.0] * 6, [(name,) for name in raw], raw)
    rng = np.random.default_rng(k)
    contributions = np.round(rng.normal(size=(400, 6)), 1)  # rounding makes many ties
    contributions[:20] = 0.0
    contributions[20:40, :3] = 0.7
    names, values = fast.top_reasons_batch(contributions, k)
    assert names.shape == values.shape == (400, min(k, 6))
    for i, row in enumerate(contributions):
        expected = fast.top_reasons(row, k)
        assert list(zip(names[i].tolist(), values[i].tolist(), strict=True)) == expected


def test_a_feature_cross_is_split_across_both_raw_features() -> None:
    fast = linear([1.0, 2.0, 3.0], [("a",), ("a", "b"), ("c",)], ["a", "b", "c"])
    _, contributions = fast.score_one(np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(contributions, [2.0, 1.0, 3.0], rtol=0, atol=1e-15)
    assert fast.bias + contributions.sum() == pytest.approx(0.25 + 6.0, abs=1e-12)


def lgb_classifier(
    params: dict[str, Any], x: NDArray[np.float64], y: NDArray[np.int_], rounds: int = 30
) -> LightGBMClassifier:
    base = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0}
    booster = lgb.train(base | params, lgb.Dataset(x, label=y), num_boost_round=rounds)
    return LightGBMClassifier(booster=booster, best_iteration=booster.current_iteration())


def test_a_split_on_a_cross_credits_both_raw_features_equally() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 2))
    y = (x[:, 0] + 0.3 * rng.normal(size=1500) > 0).astype(np.int_)
    classifier = lgb_classifier({"num_leaves": 7}, x, y, rounds=20)
    fast = FastModel.build(
        classifier, [("contract", "internet_service"), ("age",)], ["age", "contract", "internet_service"]
    )
    _, contributions = fast.score_batch(x)
    np.testing.assert_array_equal(contributions[:, 1], contributions[:, 2])
    assert np.any(contributions[:, 1] != 0.0)


def test_single_leaf_trees_only_move_the_bias() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    y = (rng.random(300) < 0.3).astype(np.int_)
    sources, raw = [("a",), ("b",), ("c",)], ["a", "b", "c"]
    lgbm = lgb_classifier({"min_data_in_leaf": 1000}, x, y, rounds=3)
    boosted = xgb.train(
        {"objective": "binary:logistic", "min_child_weight": 1e6, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=3,
    )
    xgbm = XGBoostClassifier(booster=boosted, best_iteration=3, n_features=3)
    for classifier in (lgbm, xgbm):
        fast = FastModel.build(classifier, sources, raw)
        proba, contributions = fast.score_batch(x)
        np.testing.assert_allclose(proba, classifier.predict_proba(x), rtol=0, atol=1e-7)
        assert np.all(contributions == 0.0)
        np.testing.assert_allclose(fast.bias, raw_margin(classifier, x), rtol=0, atol=1e-6)
        assert fast.score_one(x[0])[0] == proba[0]


def missing_data(seed: int) -> tuple[NDArray[np.float64], NDArray[np.int_], NDArray[np.float64]]:
    """Training data with NaN in columns 0-1 and many zeros in 2-3; test rows full of edge values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 5))
    y = (x[:, 0] - x[:, 2] + x[:, 4] + rng.normal(size=2000) > 0).astype(np.int_)
    x[rng.random(2000) < 0.2, 0] = np.nan
    x[rng.random(2000) < 0.3, 1] = np.nan
    x[rng.random(2000) < 0.4, 2] = 0.0
    x[rng.random(2000) < 0.4, 3] = 0.0
    y[np.isnan(x[:, 0])] = 1  # make missingness informative, so splits learn a direction for it
    test = rng.normal(size=(600, 5))
    zero = float(np.float32(1e-35))
    edge = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, zero, -zero, 2 * zero, -2 * zero])
    mask = rng.random(test.shape) < 0.4
    test[mask] = rng.choice(edge, size=int(mask.sum()))
    return x, y, test


def assert_follows_the_booster(
    classifier: Classifier, rows: np.ndarray, proba_atol: float, margin_atol: float
) -> None:
    """Compiled on five raw features f0..f4: probability and margin as the booster's, and every
    kernel (batch, one row, fused reasons) giving the same probability."""
    fast = FastModel.build(classifier, [(f"f{i}",) for i in range(5)], [f"f{i}" for i in range(5)])
    proba, contributions = fast.score_batch(rows)
    np.testing.assert_allclose(proba, classifier.predict_proba(rows), rtol=0, atol=proba_atol)
    np.testing.assert_allclose(
        fast.bias + contributions.sum(axis=1), raw_margin(classifier, rows), rtol=0, atol=margin_atol
    )
    assert all(fast.score_one(row)[0] == proba[i] for i, row in enumerate(rows[:100]))
    np.testing.assert_array_equal(fast.score_reasons(rows)[0], proba)


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_lightgbm_missing_values_follow_the_booster(zero_as_missing: bool) -> None:
    x, y, test = missing_data(3)
    classifier = lgb_classifier({"num_leaves": 15, "zero_as_missing": zero_as_missing}, x, y, rounds=40)
    dumped = str(classifier.booster.dump_model())
    assert ("'missing_type': 'Zero'" in dumped) is zero_as_missing
    assert "'missing_type': 'NaN'" in dumped or zero_as_missing
    assert_follows_the_booster(classifier, np.vstack([test, x[:400]]), proba_atol=1e-9, margin_atol=1e-9)


def test_xgboost_missing_values_follow_the_booster() -> None:
    x, y, test = missing_data(4)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y, missing=np.nan),
        num_boost_round=30,
    )
    classifier = XGBoostClassifier(booster=booster, best_iteration=20, n_features=5)
    assert_follows_the_booster(classifier, np.vstack([test, x[:400]]), proba_atol=1e-6, margin_atol=1e-5)


def test_float32_comparison_becomes_an_exact_double_threshold() -> None:
    rng = np.random.default_rng(5)
    thresholds = np.concatenate(
        [
            rng.normal(size=300).astype(np.float32),
            np.array([0.0, -0.0, 1.0, 1e-45, -1e-45, 3.4e38, -3.4e38], dtype=np.float32),
        ]
    )
    for t in thresholds:
        q = _float32_less_as_le(float(t))
        p = np.nextafter(t, np.float32(-np.inf))
        mid = (float(p) + float(t)) / 2.0
        probes = [mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), float(t), float(p), q]
        probes += list(float(t) + rng.normal(size=20) * max(abs(float(t)), 1e-40) * 1e-6)
        for x in probes:
            assert (np.float32(x) < t) == (x <= q), (t, x, q)


def test_path_attribution_agrees_in_sign_with_treeshap_on_the_dominant_feature(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared
) -> None:
    classifier, fast = models["lightgbm"]
    rows = prepared.x[:500]
    _, path = fast.score_batch(rows)
    weights = _source_weights(prepared.transformer.output_sources, fast.raw_features)
    shap = classifier.contributions(rows) @ weights
    dominant = np.argmax(np.abs(shap), axis=1)
    chosen = np.arange(len(rows))
    agreement = np.mean(np.sign(path[chosen, dominant]) == np.sign(shap[chosen, dominant]))
    assert agreement > 0.85


def test_categorical_lightgbm_splits_are_rejected() -> None:
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.integers(0, 5, 1000), rng.normal(size=1000)]).astype(np.float64)
    y = (x[:, 0] >= 3).astype(np.int_)
    base = {"objective": "binary", "verbosity": -1, "num_threads": 1, "min_data_per_group": 5}
    booster = lgb.train(base, lgb.Dataset(x, label=y, categorical_feature=[0]), num_boost_round=3)
    classifier = LightGBMClassifier(booster=booster, best_iteration=3)
    with pytest.raises(ValueError, match="categorical"):
        FastModel.build(classifier, [("a",), ("b",)], ["a", "b"])


def test_inputs_are_checked(models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared) -> None:
    classifier, fast = models["lightgbm"]
    with pytest.raises(ValueError, match="shape"):
        fast.score_one(prepared.x[0, :-1])
    with pytest.raises(ValueError, match="shape"):
        fast.score_batch(prepared.x[:, :-1])
    with pytest.raises(ValueError, match="not all raw features"):
        FastModel.build(classifier, prepared.transformer.output_sources, ["age"])
    with pytest.raises(ValueError, match="features"):
        FastModel.build(classifier, [("age",)], ["age"])


def test_pickle_round_trip(models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared) -> None:
    for _, fast in models.values():
        copy = pickle.loads(pickle.dumps(fast))
        assert copy.raw_features == fast.raw_features
        np.testing.assert_array_equal(
            copy.score_batch(prepared.x[:50])[1], fast.score_batch(prepared.x[:50])[1]
        )


@pytest.mark.parametrize("method", ["platt", "isotonic"])
@pytest.mark.parametrize("kind", KINDS)
def test_calibrated_model_scores_like_the_calibrated_classifier(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, kind: str, method: str
) -> None:
    """The calibration map runs in every kernel: served, batch and fused probabilities equal the
    bundle's (library predict, then the map), while contributions stay the uncalibrated ones."""
    classifier, plain = models[kind]
    raw = classifier.predict_proba(prepared.x)
    calibration = fit_calibration(method, prepared.y, raw)  # type: ignore[arg-type]
    wrapped = calibrated(classifier, calibration)
    fast = FastModel.build(wrapped, prepared.transformer.output_sources, prepared.spec.feature_columns)
    expected = wrapped.predict_proba(prepared.x)
    assert fast.calibration.method == method
    assert np.abs(expected - raw).max() > 0.01  # the map does move probabilities
    proba, contributions = fast.score_batch(prepared.x)
    singles = np.array([fast.score_one(row)[0] for row in prepared.x[:300]])
    fused, _, _ = fast.score_reasons(prepared.x, 3)
    tolerance = PROBA_TOLERANCE[kind]
    np.testing.assert_allclose(proba, expected, rtol=0, atol=tolerance)
    np.testing.assert_allclose(singles, expected[:300], rtol=0, atol=tolerance)
    np.testing.assert_array_equal(fused, proba)
    np.testing.assert_array_equal(contributions, plain.score_batch(prepared.x)[1])
    restored = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(restored.score_batch(prepared.x[:50])[0], proba[:50])


def test_a_fast_model_pickled_before_calibration_loads_uncalibrated(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared
) -> None:
    _, fast = models["lightgbm"]
    state = fast.__getstate__()
    del state["_calib"], state["calibration"]
    old = FastModel.__new__(FastModel)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.score_batch(prepared.x[:20])[0], fast.score_batch(prepared.x[:20])[0])


@pytest.mark.parametrize("tree", ["lightgbm", "xgboost"])
def test_a_blend_compiles_to_one_kernel_with_exact_reasons(
    models: dict[str, tuple[Classifier, FastModel]], prepared: Prepared, tree: str
) -> None:
    """A log-odds blend of the linear model and a forest: probabilities as the library computes them,
    contributions the weighted sum of the members' (bias + contributions = the blend's margin)."""
    linear, tree_model = models["logistic_regression"][0], models[tree][0]
    assert isinstance(linear, LinearClassifier)
    mixed = BlendClassifier(linear, tree_model, (0.35, 0.65), ("logreg", tree))  # type: ignore[arg-type]
    fast = FastModel.build(mixed, prepared.transformer.output_sources, prepared.spec.feature_columns)
    x = prepared.x  # transformed rows are never NaN (imputed): the linear part would turn NaN
    tolerance = PROBA_TOLERANCE[tree]
    proba, contributions = fast.score_batch(x)
    np.testing.assert_allclose(proba, mixed.predict_proba(x), rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        fast.bias + contributions.sum(axis=1), mixed.margin(x), rtol=0, atol=MARGIN_TOLERANCE[tree]
    )
    expected = (
        0.35 * models["logistic_regression"][1].score_batch(x)[1] + 0.65 * models[tree][1].score_batch(x)[1]
    )
    np.testing.assert_allclose(contributions, expected, rtol=0, atol=1e-9)
    singles = np.array([fast.score_one(row)[0] for row in x[:200]])
    np.testing.assert_array_equal(singles, proba[:200])
    fused, index, _ = fast.score_reasons(x, 3)
    np.testing.assert_array_equal(fused, proba)
    np.testing.assert_array_equal(index, fast.top_reason_codes(contributions, 3)[0])
    calibration = fit_calibration("platt", prepared.y, mixed.predict_proba(x))
    served = FastModel.build(
        calibrated(mixed, calibration), prepared.transformer.output_sources, prepared.spec.feature_columns
    )
    np.testing.assert_allclose(
        served.score_batch(x)[0], calibration.apply(mixed.predict_proba(x)), rtol=0, atol=tolerance
    )
    restored = pickle.loads(pickle.dumps(served))
    np.testing.assert_array_equal(restored.score_batch(x[:20])[0], served.score_batch(x[:20])[0])

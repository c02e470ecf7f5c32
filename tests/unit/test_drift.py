"""Reference profile, PSI / Jensen-Shannon, the window judgement and the window vocabulary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from churnops.core.drift import DriftParams, drift_report, js_distance, psi
from churnops.core.drift_profile import (
    TOTAL_INDEX,
    CategoricalShares,
    NumericalBins,
    ReferenceProfile,
    build_profile,
    frame_counts,
)
from churnops.core.spec import DatasetSpec
from churnops.core.synthetic import CATEGORIES, generate_customers
from churnops.core.windows import Window, parse_window
from churnops.errors import ConfigError, DataError, InvalidRequest

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return generate_customers(20_000, seed=101)


@pytest.fixture(scope="module")
def profile(training: pd.DataFrame, synthetic_spec: DatasetSpec) -> ReferenceProfile:
    return build_profile(training, synthetic_spec, training["true_churn_probability"])


def window_of(profile: ReferenceProfile, frame: pd.DataFrame) -> np.ndarray:
    return frame_counts(profile, frame, frame["true_churn_probability"])


# --- profile ------------------------------------------------------------------------------------
def test_profile_covers_every_spec_feature_by_kind(
    profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    assert profile.feature_names == synthetic_spec.feature_columns
    profile.check_spec(synthetic_spec)
    for name in synthetic_spec.features.numerical:
        assert isinstance(profile.feature(name), NumericalBins)
    for name, allowed in CATEGORIES.items():
        feature = profile.feature(name)
        assert isinstance(feature, CategoricalShares)
        assert set(feature.categories) == set(allowed)
        assert feature.other == 0


def test_numerical_bins_are_training_quantiles(profile: ReferenceProfile, training: pd.DataFrame) -> None:
    age = profile.feature("age")
    assert isinstance(age, NumericalBins)
    assert len(age.edges) == 9  # 10 bins for a feature with many values
    shares = np.asarray(age.counts) / profile.n_rows
    assert shares.max() < 0.2  # roughly a tenth each
    total = profile.feature("total_charges")
    assert total.missing == int(training["total_charges"].isna().sum()) > 0
    calls = profile.feature("support_calls")
    assert isinstance(calls, NumericalBins)
    assert len(calls.edges) < 9  # a discrete feature: tied quantiles collapse


def test_profile_counts_add_up_and_reference_vector_has_the_layout(profile: ReferenceProfile) -> None:
    layout = profile.layout()
    vector = profile.reference_vector()
    assert vector.shape == (layout.size,)
    assert vector[TOTAL_INDEX] == profile.n_rows
    for name, where in layout.features.items():
        assert vector[where].sum() == profile.n_rows, name
    assert vector[layout.prediction].sum() == profile.n_rows


def test_profile_round_trips_through_json(profile: ReferenceProfile) -> None:
    text = json.dumps(profile.to_dict(), allow_nan=False)
    again = ReferenceProfile.from_dict(json.loads(text))
    assert again == profile
    assert again.fingerprint() == profile.fingerprint()


def test_profile_of_the_training_rows_is_the_training_window(
    profile: ReferenceProfile, training: pd.DataFrame
) -> None:
    np.testing.assert_array_equal(window_of(profile, training), profile.reference_vector())


def test_a_malformed_stored_profile_names_the_field(profile: ReferenceProfile) -> None:
    data = profile.to_dict()
    data["features"][0]["counts"] = data["features"][0]["counts"][:-1]
    with pytest.raises(DataError, match=r"reference profile: features\.0"):
        ReferenceProfile.from_dict(data)
    with pytest.raises(DataError, match="reference profile"):
        ReferenceProfile.from_dict({"n_rows": 3})


def test_category_cap_sends_rare_keys_to_other_and_remembers_them(synthetic_spec: DatasetSpec) -> None:
    frame = generate_customers(3_000, seed=5)
    profile = build_profile(frame, synthetic_spec, frame["true_churn_probability"], max_categories=2)
    region = profile.feature("region")
    assert isinstance(region, CategoricalShares)
    assert len(region.categories) == 2
    assert set(region.other_keys) == set(CATEGORIES["region"]) - set(region.categories)
    assert region.other == len(frame) - sum(region.counts)
    assert not region.other_overflow
    tight = build_profile(
        frame, synthetic_spec, frame["true_churn_probability"], max_categories=2, max_other_keys=1
    )
    assert tight.feature("region").other_overflow  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.head(0), "no training rows"),
        (lambda f: f.drop(columns="age"), "missing from the frame"),
    ],
)
def test_build_profile_refuses_unusable_input(
    synthetic_spec: DatasetSpec, change: object, message: str
) -> None:
    frame = change(generate_customers(100, seed=1))  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        build_profile(frame, synthetic_spec, np.full(len(frame), 0.2))


def test_build_profile_refuses_probabilities_that_do_not_fit(synthetic_spec: DatasetSpec) -> None:
    frame = generate_customers(100, seed=1)
    with pytest.raises(DataError, match="100 finite probabilities"):
        build_profile(frame, synthetic_spec, np.full(99, 0.2))
    with pytest.raises(DataError, match="finite"):
        build_profile(frame, synthetic_spec, np.full(100, np.nan))


def test_profile_does_not_fit_another_spec(profile: ReferenceProfile, telco_spec: DatasetSpec) -> None:
    with pytest.raises(ConfigError, match="do not match"):
        profile.check_spec(telco_spec)


# --- statistics ---------------------------------------------------------------------------------
def test_psi_and_js_are_zero_for_identical_shares() -> None:
    assert psi([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0, abs=0.02)
    assert js_distance([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_formula_with_smoothing() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([20, 30, 50])
    p, q = (ref + 0.5) / (ref + 0.5).sum(), (cur + 0.5) / (cur + 0.5).sum()
    assert psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


def test_bins_empty_on_both_sides_do_not_count_but_a_new_bin_does() -> None:
    assert psi([50, 50, 0], [50, 50, 0]) == pytest.approx(psi([50, 50], [50, 50]))
    assert psi([5000, 5000, 0], [400, 400, 200]) > 1.0  # a bucket training never had


def test_js_distance_is_one_for_disjoint_shares() -> None:
    assert js_distance([10, 0], [0, 10]) == pytest.approx(1.0)


def test_statistics_of_an_empty_side_are_nan_and_bad_shapes_raise() -> None:
    assert math.isnan(psi([0, 0], [1, 2]))
    assert math.isnan(js_distance([1, 2], [0, 0]))
    with pytest.raises(DataError, match="differ in shape"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="non-negative"):
        js_distance([1, -2], [1, 2])


# --- the judgement ------------------------------------------------------------------------------
def test_clean_traffic_is_ok(profile: ReferenceProfile) -> None:
    report = drift_report(profile, window_of(profile, generate_customers(5_000, seed=202)))
    assert report.status == "ok"
    assert report.judged
    assert all(f.status == "ok" and f.psi < 0.05 for f in report.features)
    assert report.prediction_status == "ok"
    assert report.drifted_share == 0.0


def test_psi_noise_is_what_clean_windows_show(profile: ReferenceProfile) -> None:
    ratios = []
    for seed in range(5):
        report = drift_report(profile, window_of(profile, generate_customers(3_000, seed=300 + seed)))
        ratios += [f.psi / f.psi_noise for f in report.features]
    assert 0.6 < float(np.mean(ratios)) < 1.6


def test_a_new_category_raises_the_unseen_alert(profile: ReferenceProfile) -> None:
    report = drift_report(
        profile, window_of(profile, generate_customers(5_000, seed=202, drift="new_segment"))
    )
    region = next(f for f in report.features if f.feature == "region")
    assert region.status == "alert"
    assert region.unseen_share == pytest.approx(0.08, abs=0.015)
    assert any("unseen categories" in r for r in region.reasons)
    assert report.worst_first()[0].feature == "region"
    assert report.status == "alert"


def test_a_field_that_stops_arriving_alerts(profile: ReferenceProfile) -> None:
    frame = generate_customers(5_000, seed=202).assign(age=None)
    report = drift_report(profile, window_of(profile, frame))
    age = next(f for f in report.features if f.feature == "age")
    assert age.missing_share == 1.0
    assert age.status == "alert"


def test_many_moderate_drifts_alert_through_the_drifted_share(profile: ReferenceProfile) -> None:
    params = DriftParams(psi_warn=1e-6, psi_alert=10.0, drifted_share_alert=0.5)
    report = drift_report(profile, window_of(profile, generate_customers(5_000, seed=202)), params)
    assert all(f.status == "warn" for f in report.features)
    assert report.drifted_share == 1.0
    assert report.status == "alert"


def test_a_small_window_is_not_judged(profile: ReferenceProfile) -> None:
    counts = window_of(profile, generate_customers(300, seed=9, drift="encoding_change"))
    report = drift_report(profile, counts, DriftParams(min_window=1000))
    assert report.status == "not_judged"
    assert report.message == "not judged: N=300 < min 1000"
    assert not report.judged
    assert {f.status for f in report.features} == {"not_judged"}
    assert report.prediction_status == "not_judged"
    assert next(f for f in report.features if f.feature == "contract").psi > 1  # shown, not judged


def test_an_empty_window_says_not_enough_data(profile: ReferenceProfile) -> None:
    report = drift_report(profile, np.zeros(profile.layout().size, dtype=np.int64))
    assert report.status == "no_data"
    assert report.message.startswith("not enough data")
    assert all(math.isnan(f.psi) for f in report.features)
    json.dumps(report.to_dict(), allow_nan=False)


def test_an_empty_frame_is_an_empty_window(profile: ReferenceProfile, training: pd.DataFrame) -> None:
    counts = frame_counts(profile, training.head(0), [])
    assert drift_report(profile, counts).status == "no_data"


def test_monitoring_params_parse_from_yaml_with_defaults() -> None:
    import yaml

    from churnops.core.monitoring_params import MonitoringParams

    text = """
    drift: {psi_alert: 0.3, min_window: 2000}
    cost: {prices: {vcpu_hour_usd: 0.04, gb_hour_usd: 0.005}}
    """
    params = MonitoringParams.model_validate(yaml.safe_load(text))
    assert params.drift.psi_alert == 0.3
    assert params.drift.psi_warn == 0.1
    assert params.cost.prices is not None
    assert params.cost.prices.replica_hour_usd == 0.0
    assert params.performance.label_window_days == 30
    assert params.profile.numeric_bins == 10
    assert MonitoringParams().cost.prices is None
    with pytest.raises(ValueError, match="psi_alrt"):
        MonitoringParams.model_validate({"drift": {"psi_alrt": 0.3}})


def test_counts_of_another_layout_are_refused(profile: ReferenceProfile) -> None:
    with pytest.raises(DataError, match="another model version"):
        drift_report(profile, np.zeros(profile.layout().size + 1, dtype=np.int64))
    with pytest.raises(DataError, match="non-negative integers"):
        drift_report(profile, np.full(profile.layout().size, 0.5))


def test_report_json_lists_features_worst_first(profile: ReferenceProfile) -> None:
    report = drift_report(
        profile, window_of(profile, generate_customers(5_000, seed=3, drift="price_increase"))
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["features"][0]["feature"] == "monthly_charges"
    assert data["judged"] is True
    assert set(report.statistic("psi")) == set(profile.feature_names)


def test_an_unknown_statistic_is_a_clear_error(profile: ReferenceProfile) -> None:
    report = drift_report(profile, profile.reference_vector())
    with pytest.raises(InvalidRequest, match="unknown drift statistic 'ks'; known: psi, js_distance"):
        report.statistic("ks")


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="alert thresholds"):
        DriftParams(psi_warn=0.3, psi_alert=0.2)


# --- windows ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("1h", Window(seconds=3600)),
        ("15m", Window(seconds=900)),
        ("30s", Window(seconds=30)),
        ("2d", Window(seconds=172_800)),
        ("1w", Window(seconds=604_800)),
        ("5000", Window(predictions=5000)),
        (" 1H ", Window(seconds=3600)),
    ],
)
def test_windows_parse(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["", "hour", "1y", "-5", "1.5h", "0", "0h", "400d"])
def test_unknown_windows_are_clear_errors(text: str) -> None:
    with pytest.raises(InvalidRequest, match="window") as caught:
        parse_window(text)
    assert caught.value.field == "window"


def test_a_window_is_described_as_users_type_it() -> None:
    assert parse_window("1h").describe() == "last 1h"
    assert parse_window("60d").describe() == "last 60d"  # not "last 5184000 s"
    assert parse_window("90s").describe() == "last 90s"
    assert parse_window("2w").describe() == "last 14d"
    assert parse_window("5000").describe() == "last 5000 predictions"

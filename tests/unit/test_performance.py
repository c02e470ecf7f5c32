"""Realised performance per cohort with CIs, CBPE estimates and the calibration check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnops.core.params import BusinessParams
from churnops.core.performance import (
    DAY,
    LabelledPredictions,
    PerformanceParams,
    calibration_check,
    cohort_starts,
    estimate,
    performance_report,
)
from churnops.core.performance_stats import auc_delong, expected_auc, wilson
from churnops.core.threshold import expected_profit
from churnops.errors import DataError, InvalidRequest

pytestmark = pytest.mark.unit

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
BUSINESS = BusinessParams()


def traffic(
    n: int, days: int, seed: int = 0, calibrated: bool = True, delay_days: float = 10.0
) -> tuple[LabelledPredictions, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    truth = p if calibrated else p**2
    y = (rng.random(n) < truth).astype(float)
    predicted_at = T0 + rng.random(n) * days * DAY
    labelled_at = predicted_at + rng.random(n) * delay_days * DAY
    rows = LabelledPredictions.of(
        probability=p, predicted_at=predicted_at, label=y, labelled_at=labelled_at, threshold=0.3, version="3"
    )
    return rows, y


# --- statistics ---------------------------------------------------------------------------------
def test_delong_auc_matches_sklearn_and_its_error_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(4_000), 2)  # ties count half
    y = (rng.random(4_000) < scores).astype(np.int64)
    auc, se = auc_delong(y, scores)
    assert auc == pytest.approx(roc_auc_score(y, scores))
    _, se_small = auc_delong(y[:400], scores[:400])
    assert 0.003 < se < se_small < 0.05
    assert all(math.isnan(v) for v in auc_delong(np.ones(5, dtype=np.int64), scores[:5]))


def test_delong_error_agrees_with_the_bootstrap() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(1_500)
    y = (rng.random(1_500) < scores).astype(np.int64)
    _, se = auc_delong(y, scores)
    draws = [rng.integers(0, y.size, y.size) for _ in range(300)]
    boot = np.std([roc_auc_score(y[i], scores[i]) for i in draws])
    assert se == pytest.approx(boot, rel=0.2)


def test_wilson_interval_known_values() -> None:
    interval = wilson(8, 10, 1.959964)
    assert interval.value == 0.8
    assert interval.low == pytest.approx(0.4902, abs=1e-3)
    assert interval.high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0, 1.96).value == 0.0


def test_expected_auc_is_the_mean_realised_auc_of_calibrated_labels() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 20_000)
    realised = [roc_auc_score(rng.random(p.size) < p, p) for _ in range(20)]
    assert expected_auc(p) == pytest.approx(np.mean(realised), abs=0.005)
    assert math.isnan(expected_auc(np.zeros(10)))


def test_expected_confusion_metrics_match_the_average_over_label_draws() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(2, 5, 50_000)
    decision = p >= 0.3
    got = estimate(p, decision, BUSINESS)
    y = rng.random(p.size) < p
    assert got["precision"] == pytest.approx(y[decision].mean(), abs=0.01)
    assert got["recall"] == pytest.approx(y[decision].sum() / y.sum(), abs=0.01)
    assert got["prevalence"] == pytest.approx(y.mean(), abs=0.01)
    assert got["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=0.005)


# --- input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probability": [0.2, 1.5]}, "finite values in"),
        ({"label": [0, 2]}, "label must be 0, 1 or NaN"),
        ({"predicted_at": [T0]}, "predicted_at must be 1-D with 2 entries"),
        ({"threshold": None}, "decision or the threshold"),
        ({"decision": [True]}, "decision has shape"),
        ({"version": ["1", "2", "3"]}, "version must have 2 entries"),
    ],
)
def test_bad_columns_are_clear_errors(changes: dict[str, object], message: str) -> None:
    columns: dict[str, object] = {
        "probability": [0.2, 0.7],
        "predicted_at": [T0, T0],
        "label": [0, 1],
        "threshold": 0.5,
    } | changes
    with pytest.raises(DataError, match=message):
        LabelledPredictions.of(**columns)  # type: ignore[arg-type]


def test_no_predictions_is_a_not_enough_data_answer() -> None:
    empty = LabelledPredictions.of(probability=[], predicted_at=[], threshold=0.5)
    report = performance_report(empty, now=T0)
    assert report.message == "not enough data: no predictions"
    assert report.cohorts == ()
    json.dumps(report.to_dict(), allow_nan=False)


# --- cohorts ------------------------------------------------------------------------------------
def test_cohorts_are_utc_days_or_monday_weeks() -> None:
    monday = T0 + 4 * DAY  # 2026-01-05
    times = np.array([T0 + 1, T0 + DAY - 1, monday + 3 * DAY])
    assert cohort_starts(times, "day").tolist() == [T0, T0, monday + 3 * DAY]
    assert cohort_starts(times, "week").tolist() == [T0 - 3 * DAY, T0 - 3 * DAY, monday]
    with pytest.raises(InvalidRequest, match="unknown cohort 'month'; known: day, week"):
        cohort_starts(times, "month")


def test_realised_metrics_per_cohort_with_intervals_and_coverage() -> None:
    rows, y = traffic(30_000, days=3)
    report = performance_report(rows, now=T0 + 60 * DAY)
    assert [c.start_date for c in report.cohorts] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    first = report.cohorts[0]
    assert first.mature
    assert first.realised_status == "ok"
    assert first.label_coverage == 1.0
    for name, value in first.realised.items():
        assert value.low <= value.value <= value.high, name
    in_first = cohort_starts(rows.predicted_at, "day") == T0
    assert first.realised["roc_auc"].value == pytest.approx(
        roc_auc_score(y[in_first], rows.probability[in_first])
    )
    assert first.realised["profit"].value == pytest.approx(
        expected_profit(y[in_first], rows.probability[in_first], 0.3, BUSINESS)
    )
    assert first.realised["recall"].value == pytest.approx(
        ((rows.probability[in_first] >= 0.3) & (y[in_first] == 1)).sum() / y[in_first].sum()
    )


def test_labels_not_yet_arrived_lower_coverage_and_immature_cohorts_are_partial() -> None:
    rows, _ = traffic(20_000, days=2, delay_days=20.0)
    now = T0 + 12 * DAY
    report = performance_report(rows, now=now, params=PerformanceParams(label_window_days=30))
    for cohort in report.cohorts:
        arrived = (cohort_starts(rows.predicted_at, "day") == cohort.start) & (rows.labelled_at <= now)
        assert cohort.n_labelled == int(arrived.sum())
        assert 0.3 < cohort.label_coverage < 0.7
        assert not cohort.mature
        assert cohort.realised_status == "partial"


def test_too_few_labels_means_no_realised_metrics() -> None:
    rows, _ = traffic(300, days=3)
    report = performance_report(rows, now=T0 + 60 * DAY, params=PerformanceParams(min_labels=200))
    assert all(c.realised == {} for c in report.cohorts)
    assert report.cohorts[0].realised_status.startswith("not enough data: ")
    assert "< min 200" in report.cohorts[0].realised_status
    assert all("roc_auc" in c.estimated for c in report.cohorts)


def test_a_cohort_with_one_class_has_no_auc_but_answers() -> None:
    rows = LabelledPredictions.of(
        probability=np.full(300, 0.2), predicted_at=np.full(300, T0), label=np.zeros(300), threshold=0.5
    )
    report = performance_report(rows, now=T0 + 60 * DAY)
    (cohort,) = report.cohorts
    assert math.isnan(cohort.realised["roc_auc"].value)
    assert cohort.realised["recall"].value == 0.0
    assert (
        json.loads(json.dumps(report.to_dict(), allow_nan=False))["cohorts"][0]["realised"]["roc_auc"][
            "value"
        ]
        is None
    )


def test_groups_by_version_and_variant() -> None:
    rows, _ = traffic(6_000, days=1)
    variant = np.where(np.arange(6_000) % 3 == 0, "challenger", "champion")
    split = LabelledPredictions.of(
        probability=rows.probability,
        predicted_at=rows.predicted_at,
        label=rows.label,
        labelled_at=rows.labelled_at,
        decision=rows.decision,
        version=np.where(variant == "champion", "3", "4"),
        variant=variant,
    )
    report = performance_report(split, now=T0 + 60 * DAY)
    assert [(c.version, c.variant, c.n_predicted) for c in report.cohorts] == [
        ("3", "champion", 4_000),
        ("4", "challenger", 2_000),
    ]
    assert {(c.version, c.variant) for c in report.calibration} == {("3", "champion"), ("4", "challenger")}


# --- calibration check --------------------------------------------------------------------------
def test_calibrated_probabilities_give_a_reliable_estimate() -> None:
    rows, _ = traffic(40_000, days=10)
    report = performance_report(rows, now=T0 + 60 * DAY)
    (check,) = report.calibration
    assert check.reliable is True, check.reasons
    assert check.cohorts == 1  # the newest matured day alone has 4,000 labels
    assert all(c.estimate_reliable is True for c in report.cohorts)
    for cohort in report.cohorts:
        assert abs(cohort.estimated["roc_auc"] - cohort.realised["roc_auc"].value) < 0.03


def test_quiet_traffic_pools_several_matured_cohorts() -> None:
    rows, _ = traffic(4_000, days=10)  # ~400 labels a day
    check = performance_report(
        rows, now=T0 + 60 * DAY, params=PerformanceParams(calibration_min_labels=2_000)
    ).calibration[0]
    assert check.cohorts in (5, 6)  # ~400 labels a day
    assert check.n_labelled >= 2_000
    capped = performance_report(
        rows, now=T0 + 60 * DAY, params=PerformanceParams(calibration_cohorts=3)
    ).calibration[0]
    assert capped.cohorts == 3
    assert capped.reliable is None  # 1,200 labels < 2,000


def test_the_check_rarely_flags_calibrated_probabilities_at_its_minimum_sample() -> None:
    params = PerformanceParams(calibration_min_labels=1_000)
    flagged = 0
    for seed in range(100):
        rows, _ = traffic(1_200, days=1, seed=seed)
        starts = cohort_starts(rows.predicted_at, "day")
        check = calibration_check(rows, starts, T0 + 60 * DAY, params)
        assert check.reliable is not None
        flagged += check.reliable is False
    assert flagged <= 5


def test_miscalibrated_probabilities_flag_the_estimate() -> None:
    rows, _ = traffic(40_000, days=10, calibrated=False)
    report = performance_report(rows, now=T0 + 60 * DAY)
    (check,) = report.calibration
    assert check.reliable is False
    assert any("observed churn rate" in r for r in check.reasons)
    assert all(c.estimate_reliable is False for c in report.cohorts)


def test_no_matured_labels_leaves_the_estimate_unchecked() -> None:
    rows, _ = traffic(10_000, days=3)
    report = performance_report(rows, now=T0 + 5 * DAY)
    (check,) = report.calibration
    assert check.reliable is None
    assert check.reasons[0].startswith("unchecked: 0 labels in matured cohorts")
    assert all(c.estimate_reliable is None for c in report.cohorts)


def test_metric_lookup_and_unknown_names() -> None:
    rows, _ = traffic(5_000, days=2)
    report = performance_report(rows, now=T0 + 60 * DAY)
    realised = report.metric("roc_auc")
    assert [r[2] for r in realised] == ["2026-01-01", "2026-01-02"]
    assert all(0.5 < r[3] < 1 for r in report.metric("roc_auc", kind="estimated"))
    with pytest.raises(InvalidRequest, match="unknown realised metric 'accuracy'"):
        report.metric("accuracy")
    with pytest.raises(InvalidRequest, match="unknown performance kind 'guessed'"):
        report.metric("roc_auc", kind="guessed")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["cohorts"][0]["estimated"]["roc_auc"] > 0.5
    assert (
        data["cohorts"][0]["realised"]["roc_auc"]["low"] < data["cohorts"][0]["realised"]["roc_auc"]["value"]
    )

"""SRM, per-row metric values, intervals and Holm: known values, reference formulas, edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from churnops.core.metrics import classification_metrics, log_loss
from churnops.core.params import BusinessParams
from churnops.core.stats import (
    Estimate,
    MeanSummary,
    bootstrap_mean,
    brier_values,
    holm,
    log_loss_values,
    mean_estimate,
    profit_values,
    proportion_estimate,
    recall_estimate,
    srm_test,
    unit_values,
)
from churnops.core.threshold import expected_profit

pytestmark = pytest.mark.unit

BUSINESS = BusinessParams(contact_cost=5.0, saved_customer_value=200.0, offer_success_rate=0.3)


def scored(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(int)
    return y, p


# --- SRM ----------------------------------------------------------------------------------------


def test_srm_matches_scipy_chisquare() -> None:
    observed = [40_310, 14_880, 15_020, 14_950, 14_840]
    result = srm_test(observed, [40, 15, 15, 15, 15])
    want = sps.chisquare(observed, np.array([0.4, 0.15, 0.15, 0.15, 0.15]) * sum(observed))
    assert result.chi2 == pytest.approx(want.statistic)
    assert result.p_value == pytest.approx(want.pvalue)
    assert not result.alarm
    chi2, p_value, alarm = result  # unpacks as (chi2, p_value, alarm)
    assert (chi2, p_value, alarm) == (result.chi2, result.p_value, False)


def test_srm_alarms_on_a_clear_mismatch() -> None:
    result = srm_test([5_000, 4_500], [1, 1])
    assert result.alarm
    assert result.p_value < 0.001


def test_srm_weights_are_relative() -> None:
    assert srm_test([400, 600], [2, 3]) == srm_test([400, 600], [0.4, 0.6])


def test_srm_zero_weight_arm() -> None:
    assert srm_test([500, 500, 0], [1, 1, 0]).chi2 == pytest.approx(0.0)
    leaked = srm_test([500, 500, 3], [1, 1, 0])
    assert leaked.alarm
    assert math.isinf(leaked.chi2)


def test_srm_no_traffic_is_no_alarm() -> None:
    assert srm_test([0, 0], [1, 1]) == (0.0, 1.0, False)


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([1, 2], [1]), ([1, -1], [1, 1]), ([1, 1], [0, 0]), ([1, 1], [1, float("nan")])],
)
def test_srm_refuses_bad_input(observed: list[float], weights: list[float]) -> None:
    with pytest.raises(ValueError):
        srm_test(observed, weights)


# --- per-row values -------------------------------------------------------------------------------


def test_per_row_values_average_to_the_metrics() -> None:
    y, p = scored()
    assert log_loss_values(y, p).mean() == pytest.approx(log_loss(y, p))
    assert brier_values(y, p).mean() == pytest.approx(classification_metrics(y, p, 0.5)["brier"])


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.35, 1.0])
def test_profit_values_sum_to_expected_profit(threshold: float) -> None:
    y, p = scored()
    assert profit_values(y, p, threshold, BUSINESS).sum() == pytest.approx(
        expected_profit(y, p, threshold, BUSINESS)
    )


def test_unit_values_dispatch() -> None:
    y, p = scored(100)
    assert np.array_equal(unit_values("log_loss", y, p), log_loss_values(y, p))
    assert np.array_equal(unit_values("brier", y, p), brier_values(y, p))
    assert np.array_equal(unit_values("profit", y, p, 0.3, BUSINESS), profit_values(y, p, 0.3, BUSINESS))
    with pytest.raises(ValueError, match="threshold"):
        unit_values("profit", y, p)


# --- intervals ----------------------------------------------------------------------------------


def test_mean_summary_from_sums_equals_from_values() -> None:
    x = np.random.default_rng(1).normal(3, 2, 500)
    a = MeanSummary.from_values(x)
    b = MeanSummary.from_sums(x.size, float(x.sum()), float((x * x).sum()))
    assert (a.n, a.mean) == (b.n, pytest.approx(b.mean))
    assert a.variance == pytest.approx(b.variance)
    assert a.se == pytest.approx(np.std(x, ddof=1) / math.sqrt(x.size))
    assert MeanSummary.from_values([]).n == 0
    assert math.isnan(MeanSummary.from_sums(1, 2.0, 4.0).se)


def test_mean_estimate_is_the_normal_interval() -> None:
    x = np.random.default_rng(2).normal(0, 1, 400)
    est = mean_estimate(x, 0.95)
    half = 1.959964 * np.std(x, ddof=1) / 20
    assert (est.low, est.high) == (pytest.approx(x.mean() - half), pytest.approx(x.mean() + half))
    assert est.method == "normal"


def test_bootstrap_mean_agrees_with_the_normal_interval() -> None:
    x = np.random.default_rng(3).exponential(1.0, 3000)
    boot, normal = bootstrap_mean(x, seed=1), mean_estimate(x)
    assert boot.value == pytest.approx(x.mean())
    assert boot.low == pytest.approx(normal.low, abs=0.01)
    assert boot.high == pytest.approx(normal.high, abs=0.01)
    assert bootstrap_mean(x, seed=1) == boot  # seeded: reproducible


def test_wilson_interval_known_values() -> None:
    est = proportion_estimate(8, 10)
    assert (est.low, est.high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert proportion_estimate(0, 50).low == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(proportion_estimate(0, 0).value)


def test_recall_estimate_counts_churners_flagged() -> None:
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1, 0.8, 0.2])
    est = recall_estimate(y, p, 0.5)
    assert est.value == pytest.approx(0.5)
    assert est.n == 4


def test_estimate_to_dict_is_strict_json() -> None:
    est = Estimate(math.nan, 0.1, 0.2, 10, "x")
    assert json.loads(json.dumps(est.to_dict(), allow_nan=False))["value"] is None


# --- Holm ---------------------------------------------------------------------------------------


def test_holm_known_values() -> None:
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_is_monotone_and_capped() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(8)
    adjusted = holm(p)
    assert np.all(adjusted >= p)
    assert np.all(adjusted <= 1.0)
    smaller = holm(p * 0.5)
    assert np.all(smaller <= adjusted + 1e-12)  # smaller inputs never un-reject
    assert holm([]).size == 0

"""The profit-maximising threshold: formula, brute-force agreement, edge cases, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from churnops.core.params import BusinessParams
from churnops.core.threshold import CURVE_POINTS, choose_threshold, expected_profit

pytestmark = pytest.mark.unit

BUSINESS = BusinessParams(contact_cost=5.0, saved_customer_value=200.0, offer_success_rate=0.3)


def brute_force(y: np.ndarray, p: np.ndarray, business: BusinessParams) -> tuple[float, float]:
    """Try every distinct score as the threshold, highest first, keeping the first maximum."""
    best_t, best_profit = 1.0, 0.0
    for t in sorted(set(p.tolist()), reverse=True):
        profit = 0.0
        for yi, pi in zip(y, p, strict=True):
            if pi >= t:
                profit += yi * business.offer_success_rate * business.saved_customer_value
                profit -= business.contact_cost
        if profit > best_profit + 1e-9:
            best_t, best_profit = t, profit
    return best_t, best_profit


def test_expected_profit_formula() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.4, 0.1])
    # Contacts the first two: one churner saved at 30% of 200 = 60, minus 2 contacts at 5.
    assert expected_profit(y, p, 0.5, BUSINESS) == pytest.approx(60 - 10)
    assert expected_profit(y, p, 0.0, BUSINESS) == pytest.approx(120 - 20)


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_on_small_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    # Rounded scores create ties, the case where cut points must cover whole groups.
    p = np.round(rng.random(n), 1)
    y = (rng.random(n) < p * 0.4).astype(int)
    business = BusinessParams(
        contact_cost=float(rng.integers(1, 15)), saved_customer_value=100.0, offer_success_rate=0.3
    )
    choice = choose_threshold(y, p, business)
    want_t, want_profit = brute_force(y, p, business)
    assert choice.threshold == pytest.approx(want_t)
    assert choice.expected_profit == pytest.approx(want_profit)
    if want_profit > 0:  # else "contact nobody", which the formula cannot express at t = 1.0
        assert choice.expected_profit == pytest.approx(expected_profit(y, p, choice.threshold, business))
        assert choice.contacted_fraction == pytest.approx(np.mean(p >= choice.threshold))


def test_ties_go_to_the_higher_threshold() -> None:
    # The 0.9 churner earns 10 - 5 = 5; the 0.5 pair (one churner) adds 10 - 2 * 5 = 0,
    # so t = 0.9 and t = 0.5 tie at 5 and the higher one must win.
    business = BusinessParams(contact_cost=5.0, saved_customer_value=10.0, offer_success_rate=1.0)
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.1])
    choice = choose_threshold(y, p, business)
    assert choice.threshold == pytest.approx(0.9)
    assert choice.expected_profit == pytest.approx(5.0)
    assert choice.contacted_fraction == pytest.approx(0.25)


def test_no_profitable_threshold_contacts_nobody() -> None:
    business = BusinessParams(contact_cost=100.0, saved_customer_value=50.0, offer_success_rate=0.5)
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.6, 0.4, 0.2])
    choice = choose_threshold(y, p, business)
    assert (choice.threshold, choice.expected_profit, choice.contacted_fraction) == (1.0, 0.0, 0.0)


def test_profit_curve_grid_agrees_with_formula() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    choice = choose_threshold(y, p, BUSINESS)
    assert len(choice.profit_curve) == CURVE_POINTS
    assert choice.profit_curve[0][0] == 0.0
    assert choice.profit_curve[-1][0] == 1.0
    for t, profit in choice.profit_curve[::10]:
        assert profit == pytest.approx(expected_profit(y, p, t, BUSINESS))
    assert max(profit for _, profit in choice.profit_curve) <= choice.expected_profit + 1e-9


def test_threshold_is_a_python_float_in_unit_interval() -> None:
    choice = choose_threshold(np.array([1, 0]), np.array([0.7, 0.2]), BUSINESS)
    assert type(choice.threshold) is float
    assert 0.0 <= choice.threshold <= 1.0
    assert choice.to_dict()["profit_curve"][0] == [0.0, pytest.approx(choice.profit_curve[0][1])]


def test_a_million_rows_is_fast() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(1_000_000)
    y = (rng.random(1_000_000) < p).astype(np.int8)
    start = time.perf_counter()
    choice = choose_threshold(y, p, BUSINESS)
    assert time.perf_counter() - start < 2.0
    # Break-even: p * 0.3 * 200 = 5, i.e. p = 1/12 on perfectly calibrated scores.
    assert choice.threshold == pytest.approx(1 / 12, abs=0.01)

"""The always-valid test: boundary = mSPRT, running looks, and the decision rules per arm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from churnops.core.sequential import (
    SequentialResult,
    always_valid_p,
    decide_arms,
    mixture_boundary,
    sequential_auc_test,
    sequential_mean_test,
    sequential_test,
)
from churnops.core.stats import MeanSummary

pytestmark = pytest.mark.unit

ALPHA = 0.05


def msprt_ratio(mean_diff: float, sigma2: float, n: int, tau2: float) -> float:
    """Johari et al. (2017) two-sample normal-mixture likelihood ratio, n units per arm."""
    v = 2 * sigma2
    return math.sqrt(v / (v + n * tau2)) * math.exp(n * n * tau2 * mean_diff**2 / (2 * v * (v + n * tau2)))


@pytest.mark.parametrize(
    ("n", "diff"), [(200, 0.2), (1000, 0.08), (5000, 0.03), (5000, 0.05), (50_000, 0.01)]
)
def test_p_value_is_the_inverse_msprt_ratio(n: int, diff: float) -> None:
    sigma2, tuning = 0.25, 500.0
    se = math.sqrt(2 * sigma2 / n)
    # mixing variance = variance of the estimated difference at tuning_n labels per arm
    tau2 = 2 * sigma2 / tuning
    want = 1 / msprt_ratio(diff, sigma2, n, tau2)
    assert want < 1.0  # the cases are informative, not capped at 1
    assert always_valid_p(diff / se, float(n), tuning) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n_eff", [50.0, 500.0, 5000.0, 50_000.0])
def test_boundary_and_p_value_agree(n_eff: float) -> None:
    b = mixture_boundary(n_eff, 500.0, ALPHA)
    assert always_valid_p(b * 1.0001, n_eff, 500.0) < ALPHA
    assert always_valid_p(b * 0.9999, n_eff, 500.0) > ALPHA
    assert b > 1.96  # always wider than one fixed-horizon look


def test_boundary_is_tightest_near_ten_times_tuning() -> None:
    grid = {k: mixture_boundary(500.0 * k, 500.0, ALPHA) for k in (1, 3, 8, 30, 300)}
    assert min(grid, key=lambda k: grid[k]) == 8
    assert grid[8] == pytest.approx(3.04, abs=0.02)


def test_sequential_test_interval_and_z() -> None:
    r = sequential_test(0.03, 0.01, 2000, 2000, ALPHA, 500.0)
    half = mixture_boundary(2000.0, 500.0, ALPHA) * 0.01
    assert (r.low, r.high, r.z) == (
        pytest.approx(0.03 - half),
        pytest.approx(0.03 + half),
        pytest.approx(3.0),
    )


def test_running_look_keeps_the_smallest_p_and_the_intersection() -> None:
    first = sequential_test(0.05, 0.01, 1000, 1000, ALPHA, 500.0)
    later = sequential_test(0.0, 0.02, 1500, 1500, ALPHA, 500.0, previous=first)
    assert later.p_value == first.p_value
    assert later.low == pytest.approx(max(first.low, -0.02 * mixture_boundary(1500.0, 500.0, ALPHA)))
    assert later.high <= first.high
    with pytest.raises(ValueError, match="different alpha"):
        sequential_test(0.0, 0.02, 1500, 1500, 0.01, 500.0, previous=first)


def test_stored_looks_round_trip() -> None:
    looked = sequential_test(0.05, 0.01, 1000, 1000, ALPHA, 500.0)
    assert SequentialResult.from_dict(json.loads(json.dumps(looked.to_dict()))) == looked
    empty = sequential_test(math.nan, math.nan, 0, 10, ALPHA, 500.0)
    restored = SequentialResult.from_dict(json.loads(json.dumps(empty.to_dict(), allow_nan=False)))
    assert (restored.low, restored.high, restored.p_value) == (-math.inf, math.inf, 1.0)


def test_degenerate_inputs() -> None:
    assert sequential_test(math.nan, math.nan, 0, 10, ALPHA, 500.0).p_value == 1.0
    assert sequential_test(0.0, 0.0, 10, 10, ALPHA, 500.0).p_value == 1.0
    with pytest.raises(ValueError):
        mixture_boundary(100.0, 0.0, ALPHA)
    with pytest.raises(ValueError):
        sequential_test(0.1, 0.1, 10, 10, 1.5, 500.0)


def test_mean_test_uses_welch_standard_error() -> None:
    rng = np.random.default_rng(0)
    a, c = rng.normal(0.5, 1.0, 3000), rng.normal(0.4, 2.0, 6000)
    r = sequential_mean_test(MeanSummary.from_values(a), MeanSummary.from_values(c), ALPHA, 500.0)
    se = math.sqrt(a.var(ddof=1) / a.size + c.var(ddof=1) / c.size)
    assert r.se == pytest.approx(se)
    assert r.difference == pytest.approx(a.mean() - c.mean())
    assert (r.n_arm, r.n_control) == (3000, 6000)


def test_auc_test_adds_the_arms_variances() -> None:
    r = sequential_auc_test((0.80, 0.006), (0.75, 0.008), 4000, 4000, ALPHA, 500.0)
    assert r.se == pytest.approx(0.01)
    assert r.difference == pytest.approx(0.05)
    assert r.p_value < ALPHA


def result(diff: float, se: float, n: int) -> SequentialResult:
    return sequential_test(diff, se, n, n, ALPHA, 500.0)


def test_decisions() -> None:
    tests = {
        "young": result(-0.2, 0.01, 100),  # huge effect, but below min labels
        "good": result(-0.05, 0.01, 5000),
        "bad": result(0.05, 0.01, 5000),
        "same": result(0.001, 0.01, 5000),
        "none": None,
    }
    decisions = {d.arm: d for d in decide_arms(tests, alpha=ALPHA, min_labels=500, lower_is_better=True)}
    assert decisions["young"].decision == "keep running"
    assert "100 of 500 labels" in decisions["young"].reason
    assert decisions["good"].decision == "better"
    assert decisions["bad"].decision == "worse"
    assert decisions["same"].decision == "keep running"
    assert decisions["none"].decision == "keep running"
    assert decisions["good"].p_adjusted >= decisions["good"].p_value
    flipped = {d.arm: d for d in decide_arms(tests, alpha=ALPHA, min_labels=500, lower_is_better=False)}
    assert flipped["good"].decision == "worse"
    assert flipped["bad"].decision == "better"


def test_holm_is_applied_across_arms() -> None:
    # p of one arm alone below alpha, but not after Holm over 4 arms
    diff = 0.0
    for d in np.linspace(0.02, 0.05, 400):
        if 0.02 < always_valid_p(d / 0.01, 5000.0, 500.0) < 0.04:
            diff = float(d)
            break
    assert diff
    tests = {"a": result(diff, 0.01, 5000), **{k: result(0.0, 0.01, 5000) for k in "bcd"}}
    alone = decide_arms({"a": tests["a"]}, alpha=ALPHA, min_labels=500, lower_is_better=False)
    together = decide_arms(tests, alpha=ALPHA, min_labels=500, lower_is_better=False)
    assert alone[0].decision == "better"
    assert together[0].decision == "keep running"


def test_no_difference_by_margin_or_label_budget() -> None:
    tests = {"same": result(0.0, 0.001, 50_000)}
    by_margin = decide_arms(tests, alpha=ALPHA, min_labels=500, lower_is_better=True, equivalence_margin=0.01)
    assert by_margin[0].decision == "no difference"
    by_budget = decide_arms(tests, alpha=ALPHA, min_labels=500, lower_is_better=True, max_labels=20_000)
    assert by_budget[0].decision == "no difference"
    assert "20000 labels reached" in by_budget[0].reason
    assert by_budget[0].to_dict()["test"]["n_arm"] == 50_000

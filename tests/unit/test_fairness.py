"""Slice metrics and fairness gaps on hand-made groups with known rates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from churnops.core.fairness import bucket_numeric, fairness_gaps, group_labels, slice_metrics

pytestmark = pytest.mark.unit

Scored = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


@pytest.fixture
def two_groups() -> Scored:
    """Group A: 4 rows, 2 churners, 3 flagged (both churners). Group B: 4 rows, 2 churners, 1 flagged."""
    gender = np.array(["A"] * 4 + ["B"] * 4, dtype=object)
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.2, 0.3, 0.1])
    return {"gender": gender}, y, p


def test_fairness_gaps_have_known_values(two_groups: Scored) -> None:
    groups, y, p = two_groups
    gap = fairness_gaps(groups, y, p, threshold=0.5)["gender"]
    rates = {g.group: g for g in gap.groups}
    assert rates["A"].positive_rate == pytest.approx(0.75)
    assert rates["B"].positive_rate == pytest.approx(0.25)
    assert rates["A"].true_positive_rate == pytest.approx(1.0)
    assert rates["B"].true_positive_rate == pytest.approx(0.5)
    assert gap.demographic_parity_difference == pytest.approx(0.5)
    assert gap.equal_opportunity_difference == pytest.approx(0.5)
    assert gap.max_gap == pytest.approx(0.5)


def test_equal_opportunity_ignores_groups_without_churners() -> None:
    groups = {"g": np.array(["A", "A", "B", "B", "C", "C"])}
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.1, 0.9, 0.2, 0.9, 0.9])
    gap = fairness_gaps(groups, y, p, threshold=0.5)["g"]
    rates = {g.group: g for g in gap.groups}
    assert math.isnan(rates["C"].true_positive_rate)
    assert gap.equal_opportunity_difference == pytest.approx(0.5)  # A: 1.0, B: 0.5
    assert gap.demographic_parity_difference == pytest.approx(0.5)  # C: 1.0, A and B: 0.5


def test_identical_groups_have_zero_gaps() -> None:
    y = np.tile([1, 0, 1, 0], 2)
    p = np.tile([0.9, 0.8, 0.3, 0.1], 2)
    groups = {"g": np.repeat(["x", "y"], 4)}
    gap = fairness_gaps(groups, y, p, threshold=0.5)["g"]
    assert gap.demographic_parity_difference == 0.0
    assert gap.equal_opportunity_difference == 0.0


def test_gap_to_dict_is_strict_json() -> None:
    groups = {"g": np.array(["A", "A", "B"])}
    gap = fairness_gaps(groups, np.array([1, 0, 0]), np.array([0.9, 0.1, 0.9]), 0.5)["g"]
    payload = json.loads(json.dumps(gap.to_dict(), allow_nan=False))
    assert payload["groups"][1]["true_positive_rate"] is None  # B has no churners


def test_slice_metrics_per_value(two_groups: Scored) -> None:
    groups, y, p = two_groups
    results = {r.value: r for r in slice_metrics(groups, y, p, 0.5, min_count=1)["gender"]}
    a, b = results["A"], results["B"]
    assert (a.n, a.prevalence, a.positive_rate) == (4, 0.5, 0.75)
    assert a.roc_auc == pytest.approx(1.0)
    assert a.precision == pytest.approx(2 / 3)
    assert a.recall == pytest.approx(1.0)
    assert b.roc_auc == pytest.approx(0.75)  # churners 0.9, 0.2 vs stayers 0.3, 0.1: 3 of 4 pairs
    assert (b.precision, b.recall) == (1.0, 0.5)


def test_slice_metrics_skip_small_values_and_handle_one_class() -> None:
    values = np.array(["big"] * 40 + ["small"] * 5 + ["pure"] * 30)
    y = np.array([0, 1] * 20 + [1] * 5 + [0] * 30)
    p = np.linspace(0, 1, 75)
    results = {r.value: r for r in slice_metrics({"s": values}, y, p, 0.5)["s"]}
    assert set(results) == {"big", "pure"}
    assert math.isnan(results["pure"].roc_auc)
    assert results["pure"].to_dict()["roc_auc"] is None


def test_slices_are_ordered_largest_first() -> None:
    values = np.array(["b"] * 3 + ["a"] * 5 + ["c"] * 3)
    y = np.zeros(11, dtype=int)
    results = slice_metrics({"s": values}, y, np.full(11, 0.5), 0.5, min_count=1)["s"]
    assert [r.value for r in results] == ["a", "b", "c"]


def test_bucket_numeric_labels_and_edges() -> None:
    labels = bucket_numeric(np.array([18, 29.9, 30, 44, 45, 59, 60, 90, np.nan]))
    expected = ["<30", "<30", "30-45", "30-45", "45-60", "45-60", ">=60", ">=60", "missing"]
    assert labels.tolist() == expected


def test_bucket_numeric_custom_edges_and_bad_edges() -> None:
    assert bucket_numeric([0.5, 2.5], edges=(1, 2.5)).tolist() == ["<1", ">=2.5"]
    with pytest.raises(ValueError, match="increasing"):
        bucket_numeric([1.0], edges=(3, 2))


def test_missing_values_become_their_own_group() -> None:
    labels = group_labels("g", np.array(["F", None, float("nan"), "M"], dtype=object))
    assert labels.tolist() == ["F", "missing", "missing", "M"]


def test_unbucketed_numeric_column_is_rejected() -> None:
    ages = np.arange(18, 80, dtype=float)
    y = np.zeros(ages.size, dtype=int)
    with pytest.raises(ValueError, match="bucket_numeric"):
        fairness_gaps({"age": ages}, y, np.full(ages.size, 0.5), 0.5)


def test_low_cardinality_numeric_column_is_a_group() -> None:
    senior = np.array([0, 0, 1, 1])
    y = np.array([1, 0, 1, 0])
    gap = fairness_gaps({"SeniorCitizen": senior}, y, np.array([0.9, 0.1, 0.9, 0.9]), 0.5)
    assert gap["SeniorCitizen"].demographic_parity_difference == pytest.approx(0.5)

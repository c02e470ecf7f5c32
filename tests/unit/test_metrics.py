"""Metrics agree with scikit-learn and calibration error behaves as defined."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from churnops.core.metrics import check_scores, classification_metrics, reliability_curve

pytestmark = pytest.mark.unit

KEYS = {
    "roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "f1",
    "accuracy", "positive_rate", "n", "prevalence",
}  # fmt: skip


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    proba = rng.random(2_000)
    y = (rng.random(2_000) < proba).astype(int)
    return y, proba


def test_keys_are_exactly_the_documented_ones(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    assert set(classification_metrics(y, p, 0.5)) == KEYS


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_metrics_match_sklearn(scored: tuple[np.ndarray, np.ndarray], threshold: float) -> None:
    y, p = scored
    got = classification_metrics(y, p, threshold)
    predicted = (p >= threshold).astype(int)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted, zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted, zero_division=0))
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted, zero_division=0))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["positive_rate"] == pytest.approx(predicted.mean())
    assert got["n"] == 2_000
    assert got["prevalence"] == pytest.approx(y.mean())


def test_single_class_gives_nan_aucs_without_raising() -> None:
    got = classification_metrics(np.zeros(50, dtype=int), np.linspace(0, 1, 50), 0.5)
    assert math.isnan(got["roc_auc"])
    assert math.isnan(got["pr_auc"])
    assert got["recall"] == 0.0
    assert got["prevalence"] == 0.0


def test_log_loss_is_finite_on_confident_mistakes() -> None:
    got = classification_metrics(np.array([1, 0]), np.array([0.0, 1.0]), 0.5)
    assert math.isfinite(got["log_loss"])
    # About -log(1e-15); 1 - 1e-15 is not exact in binary, hence the loose tolerance.
    assert got["log_loss"] == pytest.approx(-math.log(1e-15), rel=1e-4)


def test_ece_of_calibrated_sample_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    proba = rng.random(200_000)
    y = (rng.random(200_000) < proba).astype(int)
    assert classification_metrics(y, proba, 0.5)["ece"] < 0.01


def test_ece_of_overconfident_sample_is_large() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random(50_000)
    y = (rng.random(50_000) < truth).astype(int)
    overconfident = np.where(truth > 0.5, 0.99, 0.01)
    assert classification_metrics(y, overconfident, 0.5)["ece"] > 0.2


def test_ece_matches_hand_computation() -> None:
    # Bin [0.0, 0.5): p = 0.2, 0.2, observed 0.5 -> gap 0.3 on 2 rows; bin [0.5, 1.0]: p = 1.0, y = 1.
    y = np.array([0, 1, 1])
    p = np.array([0.2, 0.2, 1.0])
    assert classification_metrics(y, p, 0.5, n_bins=2)["ece"] == pytest.approx(2 / 3 * 0.3)


def test_reliability_curve_drops_empty_bins_and_keeps_edges() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.05, 0.05, 0.95, 1.0])
    curve = reliability_curve(y, p, n_bins=10)
    assert curve.counts == (2, 2)
    assert curve.bin_lower == pytest.approx((0.0, 0.9))
    assert curve.bin_upper == pytest.approx((0.1, 1.0))
    assert curve.mean_predicted == pytest.approx((0.05, 0.975))
    assert curve.observed_frequency == pytest.approx((0.5, 0.5))
    assert curve.to_dict()["ece"] == pytest.approx(curve.ece)


def test_reliability_curve_matches_sklearn_calibration_curve(scored: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.calibration import calibration_curve

    y, p = scored
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    curve = reliability_curve(y, p, n_bins=10)
    assert curve.observed_frequency == pytest.approx(tuple(observed))
    assert curve.mean_predicted == pytest.approx(tuple(predicted))


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "differ in length"),
        ([], [], "empty"),
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, float("nan")], "finite"),
    ],
)
def test_bad_inputs_are_rejected(y: list[float], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_scores(np.asarray(y), np.asarray(p))


def test_bool_labels_are_accepted() -> None:
    y, _ = check_scores(np.array([True, False]), np.array([0.9, 0.1]))
    assert y.tolist() == [1, 0]

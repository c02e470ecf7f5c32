"""Calibration: the map chosen on validation lowers log loss and ECE on fresh rows, keeps the
ranking, and the fast path's kernel computes the same map as the bundle's numpy path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from churnops.core.calibration import (
    CalibratedClassifier,
    Calibration,
    calibrated,
    calibration_of,
    choose_calibration,
    fit_calibration,
    uncalibrated,
)
from churnops.core.candidates import LinearClassifier
from churnops.core.fast_model import _calibrate
from churnops.core.metrics import log_loss, reliability_curve

pytestmark = pytest.mark.unit


def _scores(n: int, seed: int, distort: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels drawn from true probabilities; the model reports them with its logit scaled by `distort`
    (> 1: over-confident) and shifted (a base-rate error)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    reported = 1 / (1 + np.exp(-(distort * logit + 0.5 * (distort != 1.0))))
    return y, reported


def test_calibrated_scores_are_left_alone() -> None:
    y, p = _scores(4000, 1, distort=1.0)
    chosen = choose_calibration(y, p)
    assert chosen.method == "none"
    np.testing.assert_array_equal(chosen.apply(p), p)
    assert set(chosen.scores) == {"none", "platt", "isotonic"}


@pytest.mark.parametrize("distort", [2.5, 0.4])
def test_miscalibrated_scores_get_a_map_that_helps_on_fresh_rows(distort: float) -> None:
    y, p = _scores(4000, 2, distort)
    y_new, p_new = _scores(20000, 3, distort)
    chosen = choose_calibration(y, p)
    assert chosen.method in ("platt", "isotonic")
    assert log_loss(y_new, chosen.apply(p_new)) < log_loss(y_new, p_new) - 0.01
    before, after = reliability_curve(y_new, p_new).ece, reliability_curve(y_new, chosen.apply(p_new)).ece
    assert after < 0.03 < before


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_maps_keep_the_ranking(method: str) -> None:
    y, p = _scores(3000, 4, distort=2.0)
    fitted = fit_calibration(method, y, p)  # type: ignore[arg-type]
    q = fitted.apply(p)
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, p), abs=2e-4)
    grid = np.linspace(0, 1, 10001)
    assert np.all(np.diff(fitted.apply(grid)) >= 0)
    assert fitted.apply(grid).min() > 0
    assert fitted.apply(grid).max() < 1


def test_isotonic_slopes_stay_bounded_on_small_noisy_data() -> None:
    """Plain isotonic regression jumps between neighbouring scores; the binned, centred map does
    not, so a probability that differs in its last bits (XGBoost's float32) stays as close."""
    y, p = _scores(600, 5, distort=2.0)
    fitted = fit_calibration("isotonic", y, p)
    slopes = np.diff(fitted.knots_y) / np.diff(fitted.knots_x)
    assert fitted.method == "isotonic"
    assert slopes.max() < 30


def test_small_validation_sets_do_not_try_isotonic() -> None:
    y, p = _scores(150, 6, distort=2.5)
    assert "isotonic" not in choose_calibration(y, p).scores
    one_class = np.zeros(50, dtype=np.int64)
    assert choose_calibration(one_class, np.full(50, 0.2)).method == "none"


@pytest.mark.parametrize("method", ["none", "platt", "isotonic"])
def test_kernel_computes_the_same_map(method: str) -> None:
    y, p = _scores(2000, 7, distort=2.0)
    fitted = fit_calibration(method, y, p)  # type: ignore[arg-type]
    probe = np.concatenate([p[:500], [0.0, 1.0, 1e-12, 1 - 1e-12], np.array(fitted.knots_x or [0.5])])
    args = fitted.kernel_args()
    kernel = np.array([_calibrate(float(v), args) for v in probe])
    np.testing.assert_allclose(kernel, fitted.apply(probe), rtol=1e-13, atol=1e-15)


def test_calibrated_classifier_wraps_and_unwraps() -> None:
    base = LinearClassifier(mean=np.zeros(2), scale=np.ones(2), coef=np.array([1.0, -2.0]), intercept=0.3)
    platt = Calibration("platt", a=0.5, b=-0.2)
    wrapped = calibrated(base, platt)
    assert isinstance(wrapped, CalibratedClassifier)
    assert wrapped.kind == "logistic_regression"
    assert uncalibrated(wrapped) is base
    assert calibration_of(wrapped) is platt
    assert calibrated(wrapped, Calibration()) is base  # the identity map adds no wrapper
    x = np.array([[0.5, 1.0], [-1.0, 0.2]])
    np.testing.assert_allclose(wrapped.predict_proba(x), platt.apply(base.predict_proba(x)))
    np.testing.assert_array_equal(wrapped.contributions(x), base.contributions(x))  # uncalibrated log-odds
    np.testing.assert_array_equal(wrapped.coef, base.coef)  # the base model's attributes read through
    restored = pickle.loads(pickle.dumps(wrapped))
    np.testing.assert_array_equal(restored.predict_proba(x), wrapped.predict_proba(x))

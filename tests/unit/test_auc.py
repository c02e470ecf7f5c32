"""ROC AUC: rank formula against scikit-learn, bootstrap against explicit resamples, DeLong against
the textbook O(m*n) construction, the paired bootstrap, and speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnops.core.auc import (
    _AucLayout,
    auc_bootstrap,
    auc_delong_interval,
    delong_auc_se,
    delong_test,
    paired_bootstrap_auc,
    roc_auc,
)
from churnops.core.stats import resample_counts

pytestmark = pytest.mark.unit


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def two_scorers(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.0, 1.3, n)
    y = (rng.random(n) < sigmoid(logit)).astype(int)
    return y, sigmoid(logit + rng.normal(0, 0.8, n)), sigmoid(logit + rng.normal(0, 1.2, n))


def delong_reference(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) with explicit kernel matrices: (difference, se)."""
    pos, neg = y == 1, y == 0
    comps = []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    v10 = np.vstack([c[0] for c in comps])
    v01 = np.vstack([c[1] for c in comps])
    s = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    return comps[0][2] - comps[1][2], math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_roc_auc_matches_sklearn(decimals: int | None) -> None:
    y, a, _ = two_scorers()
    p = a if decimals is None else np.round(a, decimals)  # rounding makes ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_roc_auc_is_nan_on_one_class() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.4, 0.9]))
    assert math.isnan(auc_bootstrap([0, 0], [0.2, 0.4]).value)
    assert math.isnan(delong_test([0, 0], [0.1, 0.2], [0.3, 0.4]).difference)


@pytest.mark.parametrize("decimals", [None, 1])
def test_resampled_auc_equals_the_auc_of_the_resample(decimals: int | None) -> None:
    y, a, _ = two_scorers(400)
    p = a if decimals is None else np.round(a, decimals)
    layout = _AucLayout.of(y, p)
    counts = next(resample_counts(np.random.default_rng(0), y.size, 5))
    rows = [np.repeat(layout.columns, c) for c in counts]
    want = [roc_auc_score(y[r], p[r]) for r in rows]
    assert layout.aucs(counts) == pytest.approx(want, abs=1e-12)


def test_paired_layouts_read_the_same_resample() -> None:
    y, a, b = two_scorers(300)
    la, lb = _AucLayout.of(y, a), _AucLayout.of(y, b)
    counts = next(resample_counts(np.random.default_rng(1), y.size, 3))
    rows = [np.repeat(la.columns, c) for c in counts]
    want = [roc_auc_score(y[r], b[r]) for r in rows]
    assert lb.aucs(np.take(counts, la.to(lb), axis=1)) == pytest.approx(want, abs=1e-12)


def test_bootstrap_interval_agrees_with_delong() -> None:
    y, a, _ = two_scorers(5000)
    boot, delong = auc_bootstrap(y, a, seed=3), auc_delong_interval(y, a)
    assert boot.value == pytest.approx(delong.value)
    assert boot.low < boot.value < boot.high
    assert boot.high - boot.low == pytest.approx(delong.high - delong.low, rel=0.15)
    assert auc_bootstrap(y, a, seed=3) == boot


def test_bootstrap_of_2000_resamples_of_20000_rows_is_fast() -> None:
    y, a, b = two_scorers(20_000)
    start = time.perf_counter()
    auc_bootstrap(y, a, resamples=2000)
    single = time.perf_counter() - start
    start = time.perf_counter()
    paired_bootstrap_auc(y, a, b, resamples=2000)
    paired = time.perf_counter() - start
    print(f"\nbootstrap 2000 x 20000 rows: {single:.2f} s single, {paired:.2f} s paired")
    assert single < 4.0
    assert paired < 6.0


@pytest.mark.parametrize("decimals", [None, 1])
def test_delong_matches_the_textbook_construction(decimals: int | None) -> None:
    y, a, b = two_scorers(600)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    result = delong_test(y, a, b)
    difference, se = delong_reference(y, a, b)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    assert result.high - result.difference == pytest.approx(1.959964 * se, rel=1e-5)
    auc, single_se = delong_auc_se(y, a)
    assert auc == pytest.approx(roc_auc_score(y, a))
    assert single_se > 0


def test_delong_p_value_and_margin() -> None:
    y, a, b = two_scorers(10_000)
    result = delong_test(y, a, b)
    se = (result.high - result.difference) / 1.959964
    assert result.p_value == pytest.approx(2 * (1 - _phi(abs(result.difference) / se)), rel=1e-4)
    assert result.better  # the less noisy scorer
    shifted = delong_test(y, a, b, margin=result.high + 0.01)
    assert not shifted.better
    assert delong_test(y, b, a).difference == pytest.approx(-result.difference)


def test_identical_scorers_show_no_difference() -> None:
    y, a, _ = two_scorers(800)
    for result in (delong_test(y, a, a), paired_bootstrap_auc(y, a, a, resamples=2000)):
        assert result.difference == pytest.approx(0.0)
        assert result.p_value == pytest.approx(1.0)
        assert not result.better


def test_paired_bootstrap_agrees_with_delong() -> None:
    y, a, b = two_scorers(4000, seed=5)
    boot, delong = paired_bootstrap_auc(y, a, b, seed=2), delong_test(y, a, b)
    assert boot.difference == pytest.approx(delong.difference)
    assert boot.low == pytest.approx(delong.low, abs=0.006)
    assert boot.high == pytest.approx(delong.high, abs=0.006)
    assert boot.better == delong.better
    assert boot.to_dict()["better"] == boot.better


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))

"""Monitoring on simulated traffic: drift that does not cry wolf, and performance before labels.

A quick LightGBM is trained with churnops (FeatureTransformer + fit_candidate) on generated
customers; its reference profile comes from its training rows. Traffic is the generator with
other seeds (clean) or a drift scenario; labels are the generator's draws from its true
probabilities. Figures are printed (`pytest -s`) beside the assertions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from churnops.core.candidates import Classifier, TrainingData, fit_candidate
from churnops.core.drift import DriftReport, drift_report
from churnops.core.drift_accumulator import DriftAccumulator
from churnops.core.drift_profile import ReferenceProfile, build_profile, frame_counts
from churnops.core.features import FeatureTransformer
from churnops.core.params import CandidateParams, FeatureParams
from churnops.core.performance import DAY, LabelledPredictions, PerformanceParams, performance_report
from churnops.core.spec import DatasetSpec
from churnops.core.synthetic import generate_customers

pytestmark = pytest.mark.slow

SEEDS = range(20)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LGBM = CandidateParams(
    name="lightgbm",
    kind="lightgbm",
    params={
        "n_estimators": 300,
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_child_samples": 50,
        "num_threads": 1,
    },
    early_stopping_rounds=20,
)


@dataclass(frozen=True)
class Model:
    spec: DatasetSpec
    transformer: FeatureTransformer
    classifier: Classifier
    profile: ReferenceProfile
    training: pd.DataFrame
    training_proba: np.ndarray

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.classifier.predict_proba(self.transformer.transform(frame))


@pytest.fixture(scope="module")
def model(synthetic_spec: DatasetSpec) -> Model:
    training = generate_customers(60_000, seed=1_000)
    transformer = FeatureTransformer(synthetic_spec, FeatureParams()).fit(training)
    x = transformer.transform(training)
    y = training["churn"].eq("Yes").to_numpy().astype(np.int_)
    fit, val = slice(0, 50_000), slice(50_000, None)
    classifier = fit_candidate(LGBM, TrainingData(x[fit], y[fit], x[val], y[val]), float("inf")).classifier
    proba = classifier.predict_proba(x)
    profile = build_profile(training, synthetic_spec, proba)
    return Model(synthetic_spec, transformer, classifier, profile, training, proba)


def served_window(model: Model, frame: pd.DataFrame) -> np.ndarray:
    """Counts of a window folded in request by request, as serving does."""
    accumulator = DriftAccumulator(model.profile, model.spec)
    records = frame[model.spec.feature_columns].to_dict("records")
    for record, probability in zip(records, model.predict(frame).tolist(), strict=True):
        accumulator.add(record, probability)
    return accumulator.snapshot_and_reset()


def ks_alarm(model: Model, frame: pd.DataFrame, proba: np.ndarray) -> bool:
    """What a KS test at p < 0.05 on each numerical feature and the prediction would say
    (against the raw training values: KS cannot work from the binned profile)."""
    p_values = [
        stats.ks_2samp(model.training[c].dropna(), frame[c].dropna()).pvalue
        for c in model.spec.features.numerical
    ]
    p_values.append(stats.ks_2samp(model.training_proba, proba).pvalue)
    return min(p_values) < 0.05


@dataclass
class Tally:
    alerts: int = 0
    warns: int = 0
    worst: float = 0.0
    ks: int = 0

    def add(self, model: Model, frame: pd.DataFrame, served: bool) -> None:
        proba = model.predict(frame)
        counts = served_window(model, frame) if served else frame_counts(model.profile, frame, proba)
        report = drift_report(model.profile, counts)
        self.alerts += report.status == "alert"
        self.warns += report.status == "warn"
        self.worst = max(self.worst, report.prediction_psi, *(f.psi for f in report.features))
        self.ks += ks_alarm(model, frame, proba)

    def row(self, label: str) -> str:
        return f"{label:<28} {self.alerts:>4}/20 {self.warns:>5}/20  {self.worst:.4f}  {self.ks:>6}/20"


def test_clean_traffic_raises_at_most_one_alert_in_twenty_windows(model: Model) -> None:
    print("\nwindows of                   PSI alert  warn  max PSI  KS p<0.05")
    for size in (2_000, 100_000):
        clean = Tally()
        for seed in SEEDS:
            clean.add(model, generate_customers(size, seed=5_000 + seed), served=size <= 2_000)
        print(clean.row(f"{size:,} clean"))
        assert clean.alerts <= 1
        assert clean.worst < 0.1


def test_a_one_percent_price_change_alerts_nobody_but_ks_rejects_it_at_scale(model: Model) -> None:
    """The same clean traffic with every bill 1% higher: a change nobody should act on."""
    print("\nwindows of                   PSI alert  warn  max PSI  KS p<0.05")
    for size in (2_000, 100_000):
        benign = Tally()
        for seed in SEEDS:
            frame = generate_customers(size, seed=5_000 + seed)
            benign.add(model, frame.assign(monthly_charges=frame["monthly_charges"] * 1.01), served=False)
        print(benign.row(f"{size:,} bills +1%"))
        assert benign.alerts <= 1
        if size == 100_000:
            assert benign.ks >= 15  # the test rejects a difference no one should act on


def _psi(report: DriftReport) -> dict[str, float]:
    return {f.feature: round(f.psi, 3) for f in report.features}


@pytest.mark.parametrize(
    ("drift", "flagged", "unseen"),
    [
        ("price_increase", {"monthly_charges"}, False),
        ("encoding_change", {"contract"}, True),
        ("new_segment", {"region"}, True),
    ],
)
def test_drift_scenarios_alert_on_their_features_within_one_window(
    model: Model, drift: str, flagged: set[str], unseen: bool
) -> None:
    for seed in range(5):
        report = drift_report(
            model.profile, served_window(model, generate_customers(2_000, 6_000 + seed, drift))
        )
        by_name = {f.feature: f for f in report.features}
        assert report.status == "alert"
        for name in flagged:
            assert by_name[name].status == "alert", _psi(report)
            assert any("unseen" in r for r in by_name[name].reasons) == unseen
        # Nothing else moves, except total_charges: the price rise reaches it too (a charge feature).
        related = flagged | ({"total_charges"} if drift == "price_increase" else set())
        others = {f.feature: f.status for f in report.features if f.feature not in related}
        assert set(others.values()) == {"ok"}, others
        if seed == 0:
            top = sorted(_psi(report).items(), key=lambda kv: -kv[1])[:3]
            print(f"\n{drift}: {report.message}; top PSI {top}; prediction PSI {report.prediction_psi:.3f}")


def _cohort_traffic(model: Model, days: range, drift: str | None, seed: int) -> dict[str, np.ndarray]:
    """5,000 predictions a day; each label arrives uniformly within 30 days."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[np.ndarray]] = {"p": [], "y": [], "t": [], "l": []}
    for day in days:
        frame = generate_customers(5_000, seed=7_000 + day, drift=drift)
        predicted_at = T0 + (day + rng.random(len(frame))) * DAY
        columns["p"].append(model.predict(frame))
        columns["y"].append(frame["churn"].eq("Yes").to_numpy(dtype=float))
        columns["t"].append(predicted_at)
        columns["l"].append(predicted_at + rng.random(len(frame)) * 30 * DAY)
    return {k: np.concatenate(v) for k, v in columns.items()}


def _predictions(parts: list[dict[str, np.ndarray]]) -> LabelledPredictions:
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return LabelledPredictions.of(
        probability=merged["p"],
        predicted_at=merged["t"],
        label=merged["y"],
        labelled_at=merged["l"],
        threshold=0.3,
        version="1",
        variant="champion",
    )


def test_estimated_auc_is_within_two_points_of_realised_without_concept_drift(model: Model) -> None:
    rows = _predictions([_cohort_traffic(model, range(10), None, seed=1)])
    report = performance_report(rows, now=T0 + 45 * DAY, params=PerformanceParams(label_window_days=30))
    gaps = [c.estimated["roc_auc"] - c.realised["roc_auc"].value for c in report.cohorts]
    print(f"\nestimated - realised AUC per cohort: {[round(g, 4) for g in gaps]}")
    print(f"calibration check: {report.calibration[0]}")
    assert all(c.mature for c in report.cohorts)
    assert max(abs(g) for g in gaps) <= 0.02
    assert report.calibration[0].reliable is True


def test_concept_drift_makes_the_calibration_check_flag_the_estimate_once_labels_arrive(model: Model) -> None:
    rows = _predictions(
        [
            _cohort_traffic(model, range(10), None, seed=2),
            _cohort_traffic(model, range(10, 20), "concept_drift", seed=3),
        ]
    )
    params = PerformanceParams(label_window_days=30)
    before = performance_report(rows, now=T0 + 40.5 * DAY, params=params)  # only clean cohorts matured
    after = performance_report(rows, now=T0 + 41.5 * DAY, params=params)  # the first drifted one too
    late = performance_report(rows, now=T0 + 60 * DAY, params=params)
    drifted = [c for c in late.cohorts if c.start >= T0 + 10 * DAY]
    gaps = [round(c.estimated["roc_auc"] - c.realised["roc_auc"].value, 3) for c in drifted]
    print(f"\nbefore drifted labels matured: {before.calibration[0]}")
    print(f"after: {after.calibration[0]}")
    print(f"estimated - realised AUC on drifted cohorts: {gaps}")
    assert before.calibration[0].reliable is True  # nothing to see until labels arrive
    check = after.calibration[0]
    assert check.reliable is False
    assert any("estimated AUC" in r for r in check.reasons)
    assert all(c.estimate_reliable is False for c in after.cohorts)
    assert min(gaps) > 0.02
    assert late.calibration[0].reliable is False

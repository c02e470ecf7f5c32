"""An experiment's results page from simulated evidence: counts, SRM, metrics, decisions, and the
confidence sequences carried from one look to the next."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churnops.core.experiments import parse_experiment
from churnops.core.params import BusinessParams
from churnops.core.results import ArmData, ArmResult, arm_metrics, summarise_experiment

pytestmark = pytest.mark.unit

BUSINESS = BusinessParams()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def arm(rng: np.random.Generator, n: int, noise: float | None) -> tuple[np.ndarray, np.ndarray]:
    """n labelled predictions of a model of known quality (None: label-shuffled)."""
    logit = rng.normal(-1.2, 1.3, n)
    y = (rng.random(n) < sigmoid(logit)).astype(int)
    p = sigmoid(logit + rng.normal(0, 1.0 if noise is None else noise, n))
    return y, (rng.permutation(p) if noise is None else p)


def definition(metric: str = "log_loss") -> object:
    return parse_experiment({
        "name": "q1", "primary_metric": metric, "min_labels_per_arm": 300,
        "arms": [
            {"name": "control", "version": "1", "weight": 40, "control": True},
            {"name": "better", "version": "2", "weight": 20},
            {"name": "same", "version": "3", "weight": 20},
            {"name": "shuffled", "version": "4", "weight": 20},
        ],
    })  # fmt: skip


def decision(result: ArmResult) -> str | None:
    return None if result.decision is None else result.decision.decision


def evidence(seed: int, scale: int, control_noise: float = 1.0) -> dict[str, ArmData]:
    rng = np.random.default_rng(seed)
    noises = {"control": control_noise, "better": 0.4, "same": control_noise, "shuffled": None}
    out = {}
    for name, noise in noises.items():
        n = scale * (2 if name == "control" else 1)
        y, p = arm(rng, n, noise)
        out[name] = ArmData(assigned=n * 3, served=n * 3, y_true=y, proba=p, threshold=0.3)
    return out


@pytest.mark.parametrize("metric", ["log_loss", "brier", "profit", "auc"])
def test_results_call_the_better_and_the_shuffled_arm(metric: str) -> None:
    d = definition(metric)
    # Profit per prediction is the noisiest metric: more labels and a weaker control.
    scale, control_noise = (10_000, 2.0) if metric == "profit" else (3000, 1.0)
    results = summarise_experiment(d, evidence(0, scale, control_noise), BUSINESS, resamples=2000)
    by_arm = {a.name: a for a in results.arms}
    assert not results.srm.alarm
    assert by_arm["control"].decision is None
    assert decision(by_arm["better"]) == "better"
    assert decision(by_arm["shuffled"]) == "worse"
    assert decision(by_arm["same"]) == "keep running"
    assert set(by_arm["better"].metrics) == {"roc_auc", "log_loss", "brier", "profit", "recall"}
    assert by_arm["better"].labelled == scale
    assert set(results.tests) == {"better", "same", "shuffled"}
    json.dumps(results.to_dict(), allow_nan=False)


def test_results_wait_for_labels_and_continue_sequences() -> None:
    d = definition()
    early = summarise_experiment(d, evidence(1, 100), BUSINESS)
    assert all(a.decision is None or a.decision.decision == "keep running" for a in early.arms)
    later = summarise_experiment(d, evidence(2, 3000), BUSINESS, previous=early.tests)
    for name, test in later.tests.items():
        assert test.p_value <= early.tests[name].p_value
        assert early.tests[name].low <= test.low
        assert test.high <= early.tests[name].high


def test_srm_alarm_and_missing_arms() -> None:
    d = definition()
    data = evidence(3, 500)
    data["same"] = ArmData(assigned=1000, served=1000, y_true=[], proba=[], threshold=0.3)
    results = summarise_experiment(d, data, BUSINESS)
    assert results.srm.alarm  # 1000 assignments where 3000 were due
    same = next(a for a in results.arms if a.name == "same")
    assert (same.labelled, same.metrics) == (0, {})
    assert decision(same) == "keep running"
    with pytest.raises(ValueError, match="no evidence"):
        summarise_experiment(d, {"control": data["control"]}, BUSINESS)


def test_arm_metrics_profit_is_the_threshold_modules() -> None:
    y, p = arm(np.random.default_rng(4), 2000, 0.5)
    metrics = arm_metrics(y, p, 0.3, BUSINESS)
    profit = metrics["profit"]
    assert profit.low < profit.value < profit.high
    assert metrics["roc_auc"].method == "bootstrap(2000)"
    assert metrics["recall"].method == "wilson"

"""Promotion gates: the policy parser's errors, each gate's pass and fail, missing evidence, the
first version without a champion, and the overall status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churnops.core.gate_policy import (
    GATE_NAMES,
    CalibrationGate,
    DiscriminationGate,
    FairnessGate,
    GatesPolicy,
    LatencyGate,
    ProfitGate,
    parse_gates,
)
from churnops.core.gates import (
    GateEvidence,
    calibration_gate,
    discrimination_gate,
    evaluate_gates,
    fairness_gate,
    flag_gate,
    latency_gate,
    profit_gate,
)
from churnops.core.params import BusinessParams
from churnops.errors import ConfigError

pytestmark = pytest.mark.unit

BUSINESS = BusinessParams()
AT_LEAST = "Input should be greater than or equal to"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def rows(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels from true probabilities; a good model, a worse one and a label-shuffled one."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.2, 1.3, n)
    y = (rng.random(n) < sigmoid(logit)).astype(int)
    good = sigmoid(logit + rng.normal(0, 0.5, n))
    worse = sigmoid(logit + rng.normal(0, 1.2, n))
    return y, good, worse, rng.permutation(good)


# --- the policy --------------------------------------------------------------------------------


def test_defaults_run_every_gate() -> None:
    policy = parse_gates(None)
    assert policy == parse_gates({}) == GatesPolicy()
    assert policy.discrimination == DiscriminationGate()
    assert policy.approval == "none"
    assert set(GATE_NAMES) == {
        "discrimination", "calibration", "fairness", "latency", "profit", "golden", "validation", "approval"
    }  # fmt: skip


def test_switches_and_limits() -> None:
    policy = parse_gates({
        "discrimination": {"min_auc_delta": 0.01, "method": "paired_bootstrap"},
        "calibration": False, "fairness": None, "latency": True,
        "golden": False, "approval": "required",
    })  # fmt: skip
    assert policy.discrimination is not None
    assert policy.discrimination.min_auc_delta == 0.01
    assert policy.calibration is None
    assert policy.fairness is None
    assert policy.latency == LatencyGate()
    assert policy.golden is False
    assert policy.validation is True
    assert policy.approval == "required"
    assert parse_gates({"approval": True}).approval == "required"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"accuracy": {"min": 0.9}}, "params.yaml: gates.accuracy: unknown gate (known: discrimination"),
        ({"calibration": {"max_ece": -0.1}}, f"gates.calibration.max_ece: {AT_LEAST} 0, got -0.1"),
        ({"discrimination": {"min_auc_delta": -0.01}}, f"gates.discrimination.min_auc_delta: {AT_LEAST} 0"),
        ({"latency": {"max_p99_ms": -5}}, f"gates.latency.max_p99_ms: {AT_LEAST} 0, got -5"),
        ({"fairness": {"max_demographic_parity": -1}}, "gates.fairness.max_demographic_parity: "),
        ({"profit": {"tolerance": -0.1}}, "gates.profit.tolerance: "),
        ({"profit": {"tolerance_per_prediction": -1}}, "gates.profit.tolerance_per_prediction: "),
        ({"discrimination": {"resamples": 100}}, f"gates.discrimination.resamples: {AT_LEAST} 2000"),
        ({"discrimination": {"method": "t-test"}}, "gates.discrimination.method: "),
        ({"calibration": {"max_eec": 0.1}}, "gates.calibration.max_eec: Extra inputs are not permitted"),
        ({"approval": "maybe"}, "gates.approval: "),
        (["discrimination"], "gates: expected a mapping, got list"),
    ],
)  # fmt: skip
def test_bad_policies_name_the_gate(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_gates(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- each gate ---------------------------------------------------------------------------------


def test_discrimination_passes_a_better_model_and_refuses_a_copy() -> None:
    y, good, worse, _ = rows()
    gate = DiscriminationGate()
    better = discrimination_gate(y, good, worse, gate)
    assert better.passed
    assert better.value == pytest.approx(better.detail["interval"][0])
    assert better.detail["difference"] > 0.02
    assert better.detail["p_value"] < 0.001
    assert "above min_auc_delta" in better.reason
    same = discrimination_gate(y, good, good, gate)
    assert not same.passed
    assert same.detail["p_value"] == pytest.approx(1.0)
    reverse = discrimination_gate(y, worse, good, gate)
    assert not reverse.passed


def test_discrimination_margin_and_bootstrap_method() -> None:
    y, good, worse, _ = rows(8000)
    big_margin = DiscriminationGate(min_auc_delta=0.2)
    assert not discrimination_gate(y, good, worse, big_margin).passed
    boot = discrimination_gate(y, good, worse, DiscriminationGate(method="paired_bootstrap"))
    assert boot.passed
    assert boot.detail["method"] == "paired_bootstrap(2000)"


def test_discrimination_without_champion_compares_with_a_coin() -> None:
    y, good, _, shuffled = rows(5000)
    first = discrimination_gate(y, good, None, DiscriminationGate())
    assert first.passed
    assert first.limit == 0.5
    assert "no champion" in first.detail["baseline"]
    assert first.reason.endswith("vs a coin's 0.5"), first.reason  # no "+ 0" when there is no margin
    margin = discrimination_gate(y, good, None, DiscriminationGate(min_auc_delta=0.01))
    assert margin.reason.endswith("vs a coin's 0.5 + 0.01"), margin.reason
    assert not discrimination_gate(y, shuffled, None, DiscriminationGate()).passed


def test_calibration_gate() -> None:
    rng = np.random.default_rng(1)
    truth = sigmoid(rng.normal(-1.2, 1.3, 20_000))
    y = (rng.random(truth.size) < truth).astype(int)
    calibrated = calibration_gate(y, truth, CalibrationGate(max_ece=0.05))
    assert calibrated.passed
    assert calibrated.value is not None
    assert calibrated.value < 0.02
    overconfident = calibration_gate(y, np.clip(truth * 1.8, 0, 1), CalibrationGate(max_ece=0.05))
    assert not overconfident.passed
    assert overconfident.value is not None
    assert overconfident.value > 0.05
    assert overconfident.limit == 0.05


def test_fairness_gate() -> None:
    y = np.array([1, 1, 0, 0] * 50 + [1, 1, 0, 0] * 50)
    p = np.array([0.9, 0.8, 0.7, 0.1] * 50 + [0.9, 0.2, 0.3, 0.1] * 50)
    groups = {"gender": np.array(["A"] * 200 + ["B"] * 200)}
    dp, eo = fairness_gate(
        groups, y, p, 0.5, FairnessGate(max_demographic_parity=0.6, max_equal_opportunity=0.4)
    )
    assert (dp.name, dp.value, dp.passed) == ("fairness.demographic_parity", pytest.approx(0.5), True)
    assert (eo.name, eo.value, eo.passed) == ("fairness.equal_opportunity", pytest.approx(0.5), False)
    assert eo.detail["worst"] == "gender"
    none_declared = fairness_gate({}, y, p, 0.5, FairnessGate())
    assert all(v.passed for v in none_declared)
    missing = fairness_gate(None, y, p, 0.5, FairnessGate())
    assert not any(v.passed for v in missing)


def test_latency_gate() -> None:
    lat = np.r_[np.full(995, 0.2), np.full(5, 30.0)]  # 0.5% slow calls: p99 is still fast
    verdict = latency_gate(lat, LatencyGate(max_p99_ms=5))
    assert verdict.value == pytest.approx(0.2)
    assert verdict.passed
    slow = latency_gate(np.r_[lat, np.full(20, 30.0)], LatencyGate(max_p99_ms=5))
    assert not slow.passed
    assert slow.detail["n"] == 1020
    assert not latency_gate(None, LatencyGate()).passed
    assert not latency_gate([], LatencyGate()).passed


def test_profit_gate() -> None:
    y, good, worse, shuffled = rows()
    gate = ProfitGate()
    not_worse = profit_gate(y, good, 0.3, worse, 0.3, BUSINESS, gate)
    assert not_worse.passed
    assert not_worse.detail["difference"] > 0
    lost = profit_gate(y, shuffled, 0.3, good, 0.3, BUSINESS, gate)
    assert not lost.passed
    assert lost.limit == pytest.approx(-0.05 * lost.detail["profit_baseline"])
    first = profit_gate(y, good, 0.3, None, None, BUSINESS, gate)
    assert first.passed
    assert first.detail["profit_baseline"] == 0.0


def test_flag_gates() -> None:
    assert flag_gate("golden", True, "golden requests reproduced").passed
    assert not flag_gate("golden", False, "golden requests reproduced").passed
    unknown = flag_gate("validation", None, "validation passed")
    assert not unknown.passed
    assert "no evidence" in unknown.reason


# --- the whole policy --------------------------------------------------------------------------


def evidence(candidate: np.ndarray, champion: np.ndarray | None, y: np.ndarray) -> GateEvidence:
    return GateEvidence(
        y_true=y,
        candidate_proba=candidate,
        candidate_threshold=0.3,
        champion_proba=champion,
        champion_threshold=None if champion is None else 0.3,
        groups={"age_band": np.where(np.arange(y.size) % 2 == 0, "<45", ">=45")},
        latencies_ms=np.full(200, 0.1),
        golden_reproduced=True,
        validation_passed=True,
    )


def test_policy_passes_a_better_candidate_and_refuses_a_shuffled_one() -> None:
    y, good, worse, shuffled = rows()
    policy = GatesPolicy()
    result = evaluate_gates(policy, evidence(good, worse, y), BUSINESS)
    assert result.passed, [v.reason for v in result.failed]
    assert result.status == "passed"
    names = [v.name for v in result.verdicts]
    assert names == [
        "discrimination", "calibration", "fairness.demographic_parity", "fairness.equal_opportunity",
        "latency", "profit", "golden", "validation",
    ]  # fmt: skip
    refused = evaluate_gates(policy, evidence(shuffled, good, y), BUSINESS)
    assert refused.status == "failed"
    assert {v.name for v in refused.failed} >= {"discrimination", "profit"}
    as_json = json.dumps(refused.to_dict(), allow_nan=False)
    assert '"status": "failed"' in as_json


def test_first_version_and_approval() -> None:
    y, good, _, shuffled = rows(5000)
    policy = parse_gates({"approval": "required"})
    first = evaluate_gates(policy, evidence(good, None, y), BUSINESS)
    assert first.status == "pending_approval"
    assert first.approval_required
    assert evaluate_gates(policy, evidence(shuffled, None, y), BUSINESS).status == "failed"


def test_disabled_gates_do_not_run() -> None:
    y, good, worse, _ = rows(3000)
    policy = parse_gates({g: False for g in GATE_NAMES if g != "approval"})
    assert evaluate_gates(policy, evidence(worse, good, y), BUSINESS).verdicts == ()

"""The lifecycle's pure parts: durations and params, training-set membership, triggers, the bake,
and reading the service's Prometheus text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churnops.core import gate_policy, stats
from churnops.core.lifecycle import Reference, Signals, due_triggers, judge_bake
from churnops.core.lifecycle_params import BakeParams, LifecycleParams, parse_duration
from churnops.core.membership import Membership
from churnops.core.params import Params, parse_params
from churnops.errors import ConfigError, DataError, InvalidRequest
from churnops.jobs.signals import error_rate, histogram_quantile, latency_quantile

pytestmark = pytest.mark.unit

KEY = b"k" * 32
HOUR = 3600.0


# -- durations and params ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1.5h", 5400), ("2w", 1209600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "5", "m5", "", "-1h", "1y"])
def test_an_unparsable_duration_names_the_field_and_the_forms(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^--every: .* is not a duration; use a number and a unit"):
        parse_duration(text, "--every")


def test_params_mount_gates_and_lifecycle_with_their_shorthands() -> None:
    params = parse_params("gates: {calibration: false, approval: true}\nlifecycle: {bake: {duration: 0s}}")
    assert params.gates.calibration is None
    assert params.gates.approval == "required"
    assert params.lifecycle.bake.duration == "0s"
    assert Params().gates == gate_policy.GatesPolicy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gates: {speed: {max: 1}}", "params.yaml: gates.speed: unknown gate"),
        ("gates: {calibration: {max_ece: -0.1}}", "params.yaml: gates.calibration.max_ece: Input should be"),
        ("gates: {latency: {max_p99_ms: -5}}", "params.yaml: gates.latency.max_p99_ms: Input should be"),
        (
            "lifecycle: {drift: {window: soon}}",
            "params.yaml: lifecycle.drift.window: 'soon' is not a duration",
        ),
        ("lifecycle: {schedule: 0s}", "params.yaml: lifecycle.schedule: '0s' must be longer than 0"),
        ("lifecycle: {new_data: {table: t}}", "lifecycle.new_data.table needs watermark_column"),
        ("lifecycle: {trial: {mode: canary}}", "params.yaml: lifecycle.trial.mode: Input should be 'none'"),
        ("lifecycle: {trial: {share: 1.5}}", "lifecycle.trial.share: Input should be less than 1"),
        ("lifecycle: {trial: {duration: 0s}}", "params.yaml: lifecycle.trial.duration: '0s' must be longer"),
    ],
)
def test_bad_policy_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_gate_resamples_default_matches_stats() -> None:
    assert gate_policy.DEFAULT_RESAMPLES == stats.DEFAULT_RESAMPLES


# -- membership ----------------------------------------------------------------------------------


def test_membership_finds_members_only_and_round_trips() -> None:
    members = Membership.of(KEY, [f"C{i:05d}" for i in range(5000)])
    assert len(members) == 5000
    probe = [f"C{i:05d}" for i in range(4990, 5010)]
    np.testing.assert_array_equal(members.contains(KEY, probe), [True] * 10 + [False] * 10)
    again = Membership.from_bytes(members.to_bytes())
    np.testing.assert_array_equal(again.keys, members.keys)
    assert b"C00001" not in members.to_bytes()  # hashes, no ids
    assert not Membership.of(b"x" * 32, ["C00001"]).contains(KEY, ["C00001"]).any()  # keyed


def test_membership_refuses_a_corrupt_file() -> None:
    data = Membership.of(KEY, ["a", "b"]).to_bytes()
    with pytest.raises(DataError, match="2 ids announced, 1 stored"):
        Membership.from_bytes(data[:-8])
    with pytest.raises(DataError, match="not a churnops membership file"):
        Membership.from_bytes(b"hello")


def test_empty_membership_contains_nobody() -> None:
    assert not Membership.of(KEY, []).contains(KEY, ["a"]).any()


# -- triggers ------------------------------------------------------------------------------------


def _params(**changes: object) -> LifecycleParams:
    return LifecycleParams.model_validate(changes)


def test_new_data_always_triggers_even_within_the_minimum_interval() -> None:
    fired = due_triggers(
        _params(), now_s=10 * HOUR, last_retrain_s=10 * HOUR - 60, signals=None, reference=Reference(),
        new_data=["customers-2.csv"],
    )  # fmt: skip
    assert [t.name for t in fired] == ["new_data"]
    assert "customers-2.csv" in fired[0].reason


def test_drift_alert_triggers_after_the_minimum_interval_only() -> None:
    drifted = Signals("3", predictions=5000, drift_status="alert", drift_message="monthly_charges PSI 0.41")
    recent = due_triggers(
        _params(), now_s=HOUR, last_retrain_s=HOUR - 60, signals=drifted, reference=Reference()
    )
    assert recent == []  # a rejected candidate must not retrain every minute
    later = due_triggers(
        _params(), now_s=3 * HOUR, last_retrain_s=HOUR, signals=drifted, reference=Reference()
    )
    assert [t.name for t in later] == ["drift"]
    assert "v3" in later[0].reason
    assert "monthly_charges" in later[0].reason
    off = due_triggers(
        _params(drift={"enabled": False}), now_s=3 * HOUR, last_retrain_s=HOUR, signals=drifted,
        reference=Reference(),
    )  # fmt: skip
    assert off == []


def test_schedule_triggers_once_its_period_passed() -> None:
    params = _params(schedule="1d")
    assert due_triggers(params, now_s=30 * HOUR, last_retrain_s=0.0, signals=None, reference=Reference())
    assert not due_triggers(params, now_s=20 * HOUR, last_retrain_s=0.0, signals=None, reference=Reference())
    first = due_triggers(params, now_s=HOUR, last_retrain_s=None, signals=None, reference=Reference())
    assert "no retraining yet" in first[0].reason


def test_performance_decay_realised_when_labelled_else_estimated() -> None:
    reference = Reference(auc=0.84, expected_auc=0.83)
    realised = Signals("2", predictions=5000, labels=500, auc_realised=0.77, auc_estimated=0.83)
    fired = due_triggers(
        _params(), now_s=9 * HOUR, last_retrain_s=None, signals=realised, reference=reference
    )
    assert [t.name for t in fired] == ["performance"]
    assert fired[0].reason.startswith("realised AUC 0.7700 on 500 labels below 0.7900")
    immature = Signals("2", predictions=5000, labels=10, auc_realised=0.5, auc_estimated=0.70)
    fired = due_triggers(
        _params(), now_s=9 * HOUR, last_retrain_s=None, signals=immature, reference=reference
    )
    assert fired[0].reason.startswith("estimated AUC 0.7000 on 5000 predictions (labels immature)")
    healthy = Signals("2", predictions=5000, labels=500, auc_realised=0.82, auc_estimated=0.6)
    assert not due_triggers(
        _params(), now_s=9 * HOUR, last_retrain_s=None, signals=healthy, reference=reference
    )


# -- the bake ------------------------------------------------------------------------------------

BAKE = BakeParams(duration="10m", min_predictions=200, max_error_rate=0.01, max_latency_p95_ms=50)
REPLACED = Reference(auc=0.84, expected_auc=0.82)


def test_bake_passes_after_its_duration_with_enough_predictions() -> None:
    good = Signals(
        "4", predictions=300, error_rate=0.0, latency_p95_ms=3.0, prediction_psi=0.02, auc_estimated=0.81
    )
    assert judge_bake(BAKE, good, REPLACED, started_s=0, now_s=120).outcome == "baking"
    assert judge_bake(BAKE, good, REPLACED, started_s=0, now_s=700).outcome == "passed"
    few = Signals("4", predictions=20, auc_estimated=0.81)
    assert judge_bake(BAKE, few, REPLACED, started_s=0, now_s=700).outcome == "baking"


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (Signals("4", predictions=300, error_rate=0.05), "error rate 5.00% > 1.00%"),
        (Signals("4", predictions=10, latency_p95_ms=80.0), "latency p95 80.0 ms > 50 ms"),
        (Signals("4", predictions=300, prediction_psi=0.4), "prediction drift PSI 0.400 > 0.25 against v4's"),
        (
            Signals("4", predictions=300, auc_estimated=0.55),
            "estimated AUC 0.5500 on 300 predictions < 0.7700",
        ),
        (
            Signals("4", predictions=300, labels=250, auc_realised=0.6, auc_estimated=0.9),
            "realised AUC 0.6000 on 250 labels < 0.7900",
        ),
    ],
)
def test_bake_breaches_say_what_broke(signals: Signals, reason: str) -> None:
    verdict = judge_bake(BAKE, signals, REPLACED, started_s=0, now_s=60)
    assert verdict.outcome == "breach"
    assert any(r.startswith(reason) for r in verdict.reasons), verdict.reasons


def test_a_drift_or_auc_figure_needs_a_full_window_before_it_breaks_the_bake() -> None:
    early = Signals("4", predictions=50, prediction_psi=0.9, auc_estimated=0.3)
    assert judge_bake(BAKE, early, REPLACED, started_s=0, now_s=60).outcome == "baking"


# -- Prometheus text -----------------------------------------------------------------------------

METRICS = """\
# TYPE predictions_total counter
predictions_total{variant="champion",model_version="4",outcome="ok",feature_source="online_store"} 990
predictions_total{variant="champion",model_version="4",outcome="not_found",feature_source="none"} 40
predictions_total{variant="champion",model_version="4",outcome="internal_error",feature_source="none"} 10
predictions_total{variant="champion",model_version="3",outcome="internal_error",feature_source="none"} 500
inference_latency_seconds_bucket{variant="champion",model_version="4",le="0.001"} 500
inference_latency_seconds_bucket{variant="champion",model_version="4",le="0.005"} 900
inference_latency_seconds_bucket{variant="champion",model_version="4",le="0.01"} 1000
inference_latency_seconds_bucket{variant="champion",model_version="4",le="+Inf"} 1000
"""


def test_error_rate_counts_server_errors_of_the_version_only() -> None:
    assert error_rate(METRICS, "4") == pytest.approx(10 / 1040)
    assert error_rate(METRICS, "9") is None


def test_latency_quantile_interpolates_like_prometheus() -> None:
    # rank 950 falls in (5 ms, 10 ms] holding 100 of them: 5 + 5 * 50/100 = 7.5 ms
    assert latency_quantile(METRICS, "4", 0.95) == pytest.approx(7.5)
    assert latency_quantile(METRICS, "4", 0.5) == pytest.approx(1.0)
    assert histogram_quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    assert histogram_quantile({0.1: 1.0, math.inf: 10.0}, 0.99) == pytest.approx(100.0)


# -- the calibration gate on a small holdout ----------------------------------------------------


def test_calibration_gate_judges_the_ece_beyond_chance() -> None:
    from churnops.core.gate_policy import CalibrationGate
    from churnops.core.gates import calibration_gate

    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 600)
    y = (rng.random(p.size) < p).astype(int)  # perfectly calibrated, 600 rows
    calibrated = calibration_gate(y, p, CalibrationGate(max_ece=0.02))
    assert calibrated.detail["ece"] > 0.02  # the raw ECE alone would refuse it
    assert calibrated.passed, calibrated.reason
    assert calibrated.detail["chance_ece"] == pytest.approx(0.036, abs=0.005)
    shifted = calibration_gate(y, np.clip(p + 0.12, 0, 1), CalibrationGate(max_ece=0.05))
    assert not shifted.passed
    assert shifted.value is not None
    assert shifted.value > 0.05


# -- the trial -----------------------------------------------------------------------------------


def test_trial_mode_off_in_yaml_means_no_trial() -> None:
    assert parse_params("lifecycle: {trial: {mode: off}}").lifecycle.trial.mode == "none"
    assert Params().lifecycle.trial.mode == "none"


@pytest.mark.parametrize("mode", ["experiment", "shadow"])
def test_a_trials_experiment_pins_champion_and_candidate(mode: str) -> None:
    from churnops.core.experiments import parse_experiment
    from churnops.core.lifecycle import trial_experiment, trial_limits
    from churnops.core.lifecycle_params import TrialParams

    trial = TrialParams(mode=mode, share=0.2, duration="2h", min_predictions=500)
    definition = parse_experiment(trial_experiment("lifecycle-v7-1", "6", "7", trial))
    weights = {a.name: (a.version, a.weight) for a in definition.arms}
    if mode == "experiment":  # a fifth of the customers get the candidate's answers
        assert weights == {"control": ("6", 80.0), "candidate": ("7", 20.0)}
        assert definition.shadows == ()
    else:  # everyone gets the champion's; a fifth of the requests are scored by the candidate too
        assert weights == {"control": ("6", 100.0), "candidate": ("7", 0.0)}
        assert [(s.version, s.sample) for s in definition.shadows] == [("7", 0.2)]
    assert definition.control.version == "6"
    limits = trial_limits(parse_params("lifecycle: {trial: {duration: 2h, min_predictions: 500}}").lifecycle)
    assert (limits.duration, limits.min_predictions, limits.max_error_rate) == ("2h", 500, 0.01)


def test_a_bake_without_traffic_ends_inconclusive_at_its_deadline() -> None:
    """Before the deadline a bake (and a trial) waited for its predictions for ever, holding the loop."""
    bake = BAKE.model_copy(update={"deadline": "1h"})
    few = Signals("4", predictions=20, error_rate=0.0)
    assert judge_bake(bake, few, REPLACED, started_s=0, now_s=3599).outcome == "baking"
    verdict = judge_bake(bake, few, REPLACED, started_s=0, now_s=3600)
    assert verdict.outcome == "inconclusive"
    assert (
        verdict.reasons[0] == "20 predictions over 3600 s, fewer than the 200 it needs, by its deadline (1h)"
    )
    enough = Signals("4", predictions=300, error_rate=0.0)
    assert judge_bake(bake, enough, REPLACED, started_s=0, now_s=7200).outcome == "passed"
    broken = Signals("4", predictions=20, error_rate=0.5)
    assert judge_bake(bake, broken, REPLACED, started_s=0, now_s=7200).outcome == "breach"


def test_a_deadline_shorter_than_its_duration_is_refused_naming_both() -> None:
    from pydantic import ValidationError

    from churnops.core.lifecycle import trial_limits
    from churnops.core.lifecycle_params import LifecycleParams

    with pytest.raises(
        ValidationError, match=r"lifecycle.bake.deadline 30m is shorter than lifecycle.bake.duration 1h"
    ):
        LifecycleParams.model_validate({"bake": {"duration": "1h", "deadline": "30m"}})
    with pytest.raises(
        ValidationError, match=r"lifecycle.trial.deadline 1h is shorter than lifecycle.trial.duration 2h"
    ):
        LifecycleParams.model_validate({"trial": {"mode": "shadow", "duration": "2h", "deadline": "1h"}})
    params = LifecycleParams.model_validate({"trial": {"mode": "shadow", "duration": "2h", "deadline": "3d"}})
    assert trial_limits(params).deadline == "3d"


def test_an_unset_deadline_is_a_day_after_the_duration_so_long_bakes_stay_valid() -> None:
    from churnops.core.lifecycle_params import LifecycleParams, deadline_seconds

    params = LifecycleParams.model_validate({"bake": {"duration": "2d"}, "trial": {"duration": "3d"}})
    assert deadline_seconds(params.bake.duration, params.bake.deadline) == 3 * 86_400
    bake = params.bake
    few = Signals("4", predictions=20, error_rate=0.0)
    assert judge_bake(bake, few, REPLACED, started_s=0, now_s=3 * 86_400 - 1).outcome == "baking"
    verdict = judge_bake(bake, few, REPLACED, started_s=0, now_s=3 * 86_400)
    assert verdict.outcome == "inconclusive"
    assert verdict.reasons[0].endswith("by its deadline (2d + 24h)")

"""Experiments with known truth: the SRM alarm's false and true alarms, and the always-valid test's
false-positive rate under daily peeking and its calls on arms of known quality.

Each test prints the figures it measures (run with -s to see them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from churnops.core.assignment import Assigner, allocate
from churnops.core.auc import delong_auc_se
from churnops.core.params import BusinessParams
from churnops.core.sequential import (
    SequentialResult,
    decide_arms,
    sequential_auc_test,
    sequential_mean_test,
)
from churnops.core.stats import MeanSummary, srm_test, unit_values
from tests.model.known_quality import QUALITY, labelled

pytestmark = [pytest.mark.unit, pytest.mark.slow]

WEIGHTS = {"control": 40.0, "a": 15.0, "b": 15.0, "c": 15.0, "d": 15.0}
TABLE = allocate(WEIGHTS)
ALPHA = 0.05
LOOKS = 30  # one look a day for a month
MIN_LABELS = 500
BUSINESS = BusinessParams()
THRESHOLD = 0.3
LOWER_IS_BETTER = {"log_loss": True, "brier": True, "profit": False, "auc": False}


# --- sample-ratio mismatch ------------------------------------------------------------------------


def test_srm_200_clean_experiments_alarm_at_most_once() -> None:
    alarms, smallest = 0, 1.0
    for k in range(200):
        assigner = Assigner(f"experiment-{k}", TABLE)
        counts = Counter(assigner.assign(f"cust-{i}").arm for i in range(25_000))
        result = srm_test([counts[a] for a in WEIGHTS], list(WEIGHTS.values()))
        alarms += result.alarm
        smallest = min(smallest, result.p_value)
    print(f"\nSRM: {alarms} alarms in 200 clean experiments of 25,000 assignments; smallest p {smallest:.4f}")
    assert alarms <= 1


def test_srm_alarms_when_an_arm_loses_2_percent_of_its_traffic() -> None:
    assigner = Assigner("fault", TABLE)
    arms = [assigner.assign(f"cust-{i}").arm for i in range(1_000_000)]
    clean = Counter(arms)
    seen_b = np.cumsum([arm == "b" for arm in arms])
    # The fault: every 50th request of arm b is never recorded.
    faulty = Counter(arm for arm, k in zip(arms, seen_b, strict=True) if not (arm == "b" and k % 50 == 0))
    clean_srm = srm_test([clean[a] for a in WEIGHTS], list(WEIGHTS.values()))
    fault_srm = srm_test([faulty[a] for a in WEIGHTS], list(WEIGHTS.values()))
    power = _srm_power()
    print(
        f"\nSRM at 1M assignments: clean p {clean_srm.p_value:.3f}, "
        f"2% of arm b dropped p {fault_srm.p_value:.2e}"
        f"\nalarm rate when 2% of a 15% arm is dropped, by sample size: {power}"
    )
    assert not clean_srm.alarm
    assert fault_srm.alarm
    assert power[1_000_000] >= 0.99


def _srm_power(sims: int = 2000) -> dict[int, float]:
    """How often the alarm fires when 2% of arm b's traffic is lost (chi2 ~ N * 0.15 * 0.85 * 0.02^2)."""
    rng = np.random.default_rng(0)
    shares = np.array(list(WEIGHTS.values())) / 100
    rates = {}
    for n in (100_000, 300_000, 600_000, 1_000_000):
        counts = rng.multinomial(n, shares, size=sims)
        counts[:, 2] -= rng.binomial(counts[:, 2], 0.02)
        rates[n] = float(np.mean([srm_test(c, shares).alarm for c in counts]))
    return rates


# --- the sequential test ------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One arm's labelled predictions for the whole run, revealed a day at a time."""

    y: np.ndarray
    p: np.ndarray
    per_look: int


def simulate(
    seed: int, errors: dict[str, float | None], metric: str, labels_per_day: int
) -> dict[str, tuple[int, str]]:
    """Run one experiment with a look every day; return each arm's first call (day, decision)."""
    rng = np.random.default_rng(seed)
    arms = {}
    for name, share in WEIGHTS.items():
        per_look = int(labels_per_day * share / 100)
        y, p = labelled(rng, per_look * LOOKS, errors[name])
        arms[name] = Arm(y, p, per_look)
    cumulative = {name: _cumulative(metric, arm) for name, arm in arms.items()}
    previous: dict[str, SequentialResult | None] = dict.fromkeys(WEIGHTS)
    calls: dict[str, tuple[int, str]] = {}
    for day in range(1, LOOKS + 1):
        control = _look(arms["control"], cumulative["control"], day)
        for name in list(WEIGHTS)[1:]:
            previous[name] = _test(_look(arms[name], cumulative[name], day), control, previous[name])
        tests = {n: previous[n] for n in list(WEIGHTS)[1:]}
        decisions = decide_arms(
            tests, alpha=ALPHA, min_labels=MIN_LABELS, lower_is_better=LOWER_IS_BETTER[metric]
        )
        for d in decisions:
            if d.decision in ("better", "worse") and d.arm not in calls:
                calls[d.arm] = (day, d.decision)
    return calls


def _cumulative(metric: str, arm: Arm) -> tuple[np.ndarray, np.ndarray] | None:
    if metric == "auc":
        return None
    values = unit_values(metric, arm.y, arm.p, THRESHOLD, BUSINESS)
    return np.cumsum(values), np.cumsum(values * values)


@dataclass(frozen=True)
class Auc:
    """An arm's AUC and DeLong standard error at one look, with its label count."""

    estimate: tuple[float, float]
    n: int


def _look(arm: Arm, cumulative: tuple[np.ndarray, np.ndarray] | None, day: int) -> MeanSummary | Auc:
    n = arm.per_look * day
    if cumulative is None:
        return Auc(delong_auc_se(arm.y[:n], arm.p[:n]), n)
    return MeanSummary.from_sums(n, float(cumulative[0][n - 1]), float(cumulative[1][n - 1]))


def _test(
    arm: MeanSummary | Auc, control: MeanSummary | Auc, previous: SequentialResult | None
) -> SequentialResult:
    tuning = float(MIN_LABELS)
    if isinstance(arm, Auc) and isinstance(control, Auc):
        return sequential_auc_test(arm.estimate, control.estimate, arm.n, control.n, ALPHA, tuning, previous)
    assert isinstance(arm, MeanSummary)
    assert isinstance(control, MeanSummary)
    return sequential_mean_test(arm, control, ALPHA, tuning, previous)


@pytest.mark.parametrize("metric", ["log_loss", "brier", "profit", "auc"])
def test_aa_false_positive_rate_with_daily_peeking(metric: str) -> None:
    """100 A/A experiments (5 identical arms), 30 daily looks each: how many ever call a difference."""
    same = dict.fromkeys(WEIGHTS, QUALITY["trained-5k"])
    experiments_with_a_call = arms_called = 0
    for seed in range(100):
        calls = simulate(seed, same, metric, labels_per_day=2000)
        experiments_with_a_call += bool(calls)
        arms_called += len(calls)
    fwer = experiments_with_a_call / 100
    print(
        f"\n{metric}: A/A family-wise false-positive rate {fwer:.2f} over 100 experiments x 4 arms x "
        f"{LOOKS} looks ({arms_called} arm calls of 400); alpha {ALPHA}"
    )
    assert fwer <= ALPHA


@pytest.mark.parametrize("metric", ["log_loss", "brier", "profit", "auc"])
def test_known_quality_arms_are_called_right(metric: str) -> None:
    """Arms = the 5k-row champion (control), a 50k-row model, one without a feature, a 1k-row
    model and a label-shuffled one: the 50k model is called better, the shuffled one worse, and
    no arm is ever called in the wrong direction."""
    errors = {
        "control": QUALITY["trained-5k"],
        "a": QUALITY["trained-50k"],
        "b": QUALITY["no-tenure"],
        "c": QUALITY["trained-1k"],
        "d": QUALITY["label-shuffled"],
    }
    labels_per_day = 25_000 if metric == "profit" else 3000  # profit per prediction is the noisiest
    runs = [simulate(1000 + seed, errors, metric, labels_per_day) for seed in range(20)]
    better = [r["a"][0] for r in runs if r.get("a", (0, ""))[1] == "better"]
    shuffled = [r["d"][0] for r in runs if r.get("d", (0, ""))[1] == "worse"]
    wrong = [(arm, call) for r in runs for arm, call in r.items() if (call[1] == "better") != (arm == "a")]
    worse_called = {arm: sum(r.get(arm, (0, ""))[1] == "worse" for r in runs) for arm in "bc"}
    print(
        f"\n{metric} ({labels_per_day} labels/day): 50k-row arm called better in {len(better)}/20 "
        f"(median day {np.median(better) if better else float('nan'):.0f}); shuffled called worse in "
        f"{len(shuffled)}/20 (median day {np.median(shuffled):.0f}); no-tenure / 1k-row called worse in "
        f"{worse_called['b']}/20 / {worse_called['c']}/20; wrong-direction calls {len(wrong)}"
    )
    assert len(better) >= 18
    assert len(shuffled) == 20
    assert not wrong

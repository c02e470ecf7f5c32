"""Thompson-sampling weights: burn-in, floor, totals, direction, reproducibility."""

from __future__ import annotations

import pytest

from churnops.core.bandit import ArmPosterior, expected_shares, thompson_weights
from churnops.core.stats import MeanSummary, srm_test

pytestmark = pytest.mark.unit


def posts(*means: float, se: float = 0.01, labels: int = 5000) -> list[ArmPosterior]:
    return [ArmPosterior(f"arm{i}", m, se, labels) for i, m in enumerate(means)]


def test_burn_in_gives_equal_weights_until_every_arm_has_its_labels() -> None:
    arms = [*posts(0.5, 0.4), ArmPosterior("late", 0.1, 0.01, 99)]
    update = thompson_weights(arms, lower_is_better=True, burn_in_labels=100)
    assert update.burn_in
    assert update.weights == {
        "arm0": pytest.approx(100 / 3),
        "arm1": pytest.approx(100 / 3),
        "late": pytest.approx(100 / 3),
    }
    assert "late" in update.reason


def test_weights_sum_to_the_total_and_keep_the_floor() -> None:
    update = thompson_weights(posts(0.50, 0.40, 0.55, 0.60, 0.70), lower_is_better=True, burn_in_labels=100)
    assert not update.burn_in
    assert sum(update.weights.values()) == pytest.approx(100.0)
    assert min(update.weights.values()) >= 1.0 - 1e-12
    assert max(update.weights, key=lambda k: update.weights[k]) == "arm1"
    assert update.weights["arm1"] == pytest.approx(96.0, abs=0.1)  # 1% floor x 5 arms, rest to the best
    assert update.prob_best["arm1"] == pytest.approx(1.0, abs=1e-3)


def test_higher_is_better_flips_the_winner() -> None:
    update = thompson_weights(posts(0.70, 0.75, 0.72), lower_is_better=False, burn_in_labels=0, total=1.0)
    assert max(update.weights, key=lambda k: update.weights[k]) == "arm1"
    assert sum(update.weights.values()) == pytest.approx(1.0)


def test_uncertain_arms_share_traffic() -> None:
    update = thompson_weights(posts(0.50, 0.50, se=0.05), lower_is_better=True, burn_in_labels=0)
    assert update.weights["arm0"] == pytest.approx(50.0, abs=2.0)


def test_updates_are_reproducible_by_seed() -> None:
    arms = posts(0.50, 0.49, 0.51, se=0.01)
    first = thompson_weights(arms, lower_is_better=True, burn_in_labels=0, seed=7)
    assert thompson_weights(arms, lower_is_better=True, burn_in_labels=0, seed=7) == first


def test_posteriors_from_summaries() -> None:
    summary = MeanSummary(400, 0.5, 0.16)
    post = ArmPosterior.from_summary("a", summary)
    assert (post.mean, post.se, post.labels) == (0.5, pytest.approx(0.02), 400)
    assert ArmPosterior.from_auc("b", 0.8, 0.01, 900).labels == 900


@pytest.mark.parametrize(("floor", "arms"), [(0.3, 4), (-0.1, 2)])
def test_infeasible_floor_is_refused(floor: float, arms: int) -> None:
    with pytest.raises(ValueError, match="floor"):
        thompson_weights(posts(*[0.5] * arms), lower_is_better=True, burn_in_labels=0, floor=floor)


def test_bad_arms_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        thompson_weights([ArmPosterior("a", 0.5, 0.1, 9)] * 2, lower_is_better=True, burn_in_labels=0)


def test_expected_shares_feed_srm() -> None:
    periods = [(10_000, {"a": 50.0, "b": 50.0}), (10_000, {"a": 90.0, "b": 10.0})]
    expected = expected_shares(periods)
    assert expected == {"a": pytest.approx(14_000), "b": pytest.approx(6_000)}
    names = list(expected)
    assert not srm_test([14_050, 5_950], [expected[n] for n in names]).alarm
    assert srm_test([10_000, 10_000], [expected[n] for n in names]).alarm  # counts ignoring the change

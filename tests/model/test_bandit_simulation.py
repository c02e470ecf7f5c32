"""The bandit with known truth: arms of different quality, labels from the true probabilities,
weights recomputed after each batch of labels. Prints the figures it measures (-s)."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.core.bandit import ArmPosterior, thompson_weights
from churnops.core.stats import MeanSummary, log_loss_values
from tests.model.known_quality import QUALITY, labelled

pytestmark = [pytest.mark.unit, pytest.mark.slow]

ARMS = ("trained-5k", "trained-50k", "no-tenure", "trained-1k", "label-shuffled")
BEST = "trained-50k"
LABELS_PER_UPDATE = 2000
BURN_IN = 1000
UPDATES = 20
FLOOR = 0.01


def run(seed: int) -> list[dict[str, float]]:
    """One bandit experiment on log loss: the weights after each update."""
    rng = np.random.default_rng(seed)
    sums = {arm: [0, 0.0, 0.0] for arm in ARMS}
    weights = dict.fromkeys(ARMS, 100.0 / len(ARMS))
    history = []
    for update in range(1, UPDATES + 1):
        served = rng.multinomial(LABELS_PER_UPDATE, np.array(list(weights.values())) / 100)
        for arm, n in zip(ARMS, served, strict=True):
            values = log_loss_values(*labelled(rng, int(n), QUALITY[arm])) if n else np.zeros(0)
            sums[arm][0] += int(n)
            sums[arm][1] += float(values.sum())
            sums[arm][2] += float((values * values).sum())
        posteriors = [ArmPosterior.from_summary(a, MeanSummary.from_sums(*sums[a])) for a in ARMS]  # type: ignore[arg-type]
        weights = thompson_weights(
            posteriors, lower_is_better=True, burn_in_labels=BURN_IN, floor=FLOOR, seed=update
        ).weights
        history.append(weights)
    return history


def test_bandit_sends_most_traffic_to_the_best_arm_and_keeps_every_floor() -> None:
    runs = [run(seed) for seed in range(30)]
    for history in runs:
        for weights in history:
            assert sum(weights.values()) == pytest.approx(100.0)
            assert min(weights.values()) >= 100 * FLOOR - 1e-9
    share = np.array([[w[BEST] for w in history] for history in runs])  # runs x updates
    majority_from = [
        next((u + 1 for u in range(UPDATES) if (row[u:] > 50).all()), UPDATES + 1) for row in share
    ]
    print(
        f"\nbandit, {LABELS_PER_UPDATE} labels per update, burn-in {BURN_IN} labels per arm (update 3): "
        f"best arm holds > 50% for good from update {np.median(majority_from):.0f} (median of 30 runs, "
        f"latest {max(majority_from)}); its median share at updates 5 / 10 / 20: "
        f"{np.median(share[:, 4]):.1f}% / {np.median(share[:, 9]):.1f}% / {np.median(share[:, 19]):.1f}%"
    )
    assert np.median(majority_from) <= 4
    assert max(majority_from) <= 10
    assert np.all(share[:, 9] > 50)

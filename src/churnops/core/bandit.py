"""Bandit mode: Thompson sampling on the primary metric, recomputed on a schedule.

The reward is the experiment's primary metric itself, so the bandit optimises what the test
measures. Each arm's posterior for its mean per-prediction log loss, Brier score or profit is
normal, N(mean, se^2) — the flat-prior posterior of a mean once the central limit theorem holds,
which the burn-in guarantees; for AUC it is N(AUC, DeLong se^2). A Beta-Bernoulli posterior on
"the prediction was right" was rejected: it rewards accuracy at one threshold, not the metric the
experiment decides on.

An update is a pure function of the per-arm summaries (what a ledger query returns): the new
weight of an arm is its posterior probability of being the best arm (Monte Carlo over `draws`
joint posterior draws, seeded, so a recorded update can be recomputed), mixed with a floor:

    weight_i = total * (floor + (1 - k * floor) * P(arm i is best))

so every arm keeps at least `floor` of the traffic (it keeps collecting labels and the sequential
test keeps its power against control) and the weights sum to `total`. Until every arm has
`burn_in_labels` labels all arms get equal weight. Weights change only at updates (e.g. hourly),
never per request, and the bucket table moves only the difference (core.assignment).

Measured (tests/model/test_bandit_simulation.py, 30 runs): 5 arms on log loss — models of known
quality (simulated 50k-, 5k- and 1k-row models, one without a feature, one label-shuffled), labels
drawn from the true probabilities, 2,000 labelled predictions per update, burn-in 1,000 labels
per arm (so burn-in ends at update 3): the best arm holds most of the traffic (> 50%, for good)
from update 3 in the median run and by update 4 in every run, with a median share of 95.5% at
update 5 (the most it can have with 1% floors on 4 other arms is 96%). Budget about
`burn_in_labels * arms / labels_per_update + 2` updates before the traffic concentrates.

Notes for the statistics. Under a bandit an arm's sample size depends on its results, so plain
per-arm means are slightly biased (towards worse) and the always-valid test of an arm against
control, which assumes the arm/control allocation ratio does not react to outcomes, holds only
approximately: read the bandit's `better`/`worse` calls as indicative and confirm a winner in
fixed mode before promoting it. The sample-ratio-mismatch test must compare counts with the
weights in force when each request came (`expected_shares`), not with the latest weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from churnops.core.stats import MeanSummary


@dataclass(frozen=True)
class ArmPosterior:
    """An arm's estimate of the primary metric, its standard error and its label count."""

    name: str
    mean: float
    se: float
    labels: int

    @classmethod
    def from_summary(cls, name: str, summary: MeanSummary) -> ArmPosterior:
        """From a per-unit metric's count, mean and variance."""
        return cls(name, summary.mean, summary.se, summary.n)

    @classmethod
    def from_auc(cls, name: str, auc: float, se: float, labels: int) -> ArmPosterior:
        """From an arm's AUC and DeLong standard error (`stats.delong_auc_se`)."""
        return cls(name, auc, se, labels)


@dataclass(frozen=True)
class BanditUpdate:
    """New weights (summing to the total), each arm's probability of being best, and why."""

    weights: dict[str, float]
    prob_best: dict[str, float]
    burn_in: bool
    reason: str


def thompson_weights(
    arms: Sequence[ArmPosterior],
    *,
    lower_is_better: bool,
    burn_in_labels: int,
    floor: float = 0.01,
    total: float = 100.0,
    draws: int = 20_000,
    seed: int = 0,
) -> BanditUpdate:
    """One scheduled update of the arms' weights (module docstring); pass the update's sequence
    number as `seed` so recorded updates are reproducible."""
    k = len(arms)
    if k < 2 or len({a.name for a in arms}) != k:
        raise ValueError("a bandit needs at least 2 arms with distinct names")
    if not floor >= 0 or floor * k > 1:
        raise ValueError(f"floor must be >= 0 and at most 1/{k} for {k} arms, got {floor}")
    if not total > 0:
        raise ValueError(f"total must be > 0, got {total}")
    waiting = [a.name for a in arms if a.labels < burn_in_labels or not _usable(a)]
    if waiting:
        equal = {a.name: total / k for a in arms}
        reason = f"burn-in: {len(waiting)} arm(s) below {burn_in_labels} labels ({', '.join(waiting)})"
        return BanditUpdate(equal, {a.name: 1 / k for a in arms}, True, reason)
    best = _prob_best(arms, lower_is_better, draws, seed)
    shares = floor + (1 - k * floor) * best
    weights = {a.name: float(total * s) for a, s in zip(arms, shares, strict=True)}
    leader = arms[int(np.argmax(best))].name
    reason = f"thompson: {leader} best with probability {best.max():.3f} ({draws} draws, seed {seed})"
    return BanditUpdate(weights, {a.name: float(p) for a, p in zip(arms, best, strict=True)}, False, reason)


def expected_shares(periods: Sequence[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Expected assignments per arm over weight periods: sum of (requests in the period) times
    (the arm's share then). Pass the result as `weights` to `stats.srm_test` in bandit mode."""
    expected: dict[str, float] = {}
    for requests, weights in periods:
        total = sum(weights.values())
        if total <= 0:
            raise ValueError("every period's weights must sum to a positive total")
        for arm, weight in weights.items():
            expected[arm] = expected.get(arm, 0.0) + requests * weight / total
    return expected


def _usable(arm: ArmPosterior) -> bool:
    return math.isfinite(arm.mean) and math.isfinite(arm.se) and arm.se >= 0


def _prob_best(arms: Sequence[ArmPosterior], lower_is_better: bool, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([a.mean for a in arms])
    ses = np.array([a.se for a in arms])
    sample = rng.standard_normal((draws, len(arms))) * ses + means
    winners = np.argmin(sample, axis=1) if lower_is_better else np.argmax(sample, axis=1)
    return np.bincount(winners, minlength=len(arms)) / draws

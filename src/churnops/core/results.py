"""An experiment's results from its evidence: per-arm counts and realised metrics with intervals,
the sample-ratio-mismatch test, the always-valid test of each arm against control on the primary
metric, Holm across arms, and a decision per arm.

Pure: the caller (jobs/experiments) reads the ledger — assignments per arm and each arm's
labelled predictions — and stores `ExperimentResults.tests` so the next look continues the
confidence sequences instead of restarting them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from churnops.core.auc import auc_bootstrap, delong_auc_se
from churnops.core.experiments import ExperimentDefinition
from churnops.core.metrics import FloatArray, IntArray, check_scores
from churnops.core.params import BusinessParams
from churnops.core.sequential import (
    ArmDecision,
    SequentialResult,
    decide_arms,
    sequential_auc_test,
    sequential_mean_test,
)
from churnops.core.stats import (
    DEFAULT_RESAMPLES,
    Estimate,
    MeanSummary,
    SrmResult,
    brier_values,
    log_loss_values,
    mean_estimate,
    profit_values,
    recall_estimate,
    srm_test,
    unit_values,
)
from churnops.core.threshold import expected_profit


@dataclass(frozen=True)
class ArmData:
    """One arm's evidence: requests assigned and served, and its labelled predictions."""

    assigned: int
    served: int
    y_true: ArrayLike
    proba: ArrayLike
    threshold: float  # the arm's model's decision threshold (recall and profit)


@dataclass(frozen=True)
class ArmResult:
    """Counts, realised metrics with intervals and (for non-control arms) the decision."""

    name: str
    control: bool
    weight: float
    assigned: int
    served: int
    labelled: int
    metrics: dict[str, Estimate]
    decision: ArmDecision | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "control": self.control,
            "weight": self.weight,
            "assigned": self.assigned,
            "served": self.served,
            "labelled": self.labelled,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "decision": None if self.decision is None else self.decision.to_dict(),
        }


@dataclass(frozen=True)
class ExperimentResults:
    """The results page of one experiment at one look."""

    experiment: str
    primary_metric: str
    srm: SrmResult
    arms: tuple[ArmResult, ...]
    tests: dict[str, SequentialResult]  # store these; pass them back as `previous` next time

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        chi2 = self.srm.chi2 if np.isfinite(self.srm.chi2) else None
        return {
            "experiment": self.experiment,
            "primary_metric": self.primary_metric,
            "srm": {"chi2": chi2, "p_value": self.srm.p_value, "alarm": self.srm.alarm},
            "arms": [arm.to_dict() for arm in self.arms],
        }


def arm_metrics(
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float,
    business: BusinessParams,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Realised metrics of one arm's labelled predictions, each with its interval: `roc_auc`
    (bootstrap), `log_loss`, `brier`, `profit` per labelled prediction (normal) and `recall`
    at the threshold (Wilson)."""
    y, p = check_scores(y_true, proba)
    profit = mean_estimate(profit_values(y, p, threshold, business), confidence)
    # The point estimate comes from the threshold module itself: one definition of profit.
    profit_point = expected_profit(y, p, threshold, business) / y.size
    return {
        "roc_auc": auc_bootstrap(y, p, confidence, resamples, seed),
        "log_loss": mean_estimate(log_loss_values(y, p), confidence),
        "brier": mean_estimate(brier_values(y, p), confidence),
        "profit": Estimate(profit_point, profit.low, profit.high, profit.n, profit.method),
        "recall": recall_estimate(y, p, threshold, confidence),
    }


def summarise_experiment(
    definition: ExperimentDefinition,
    data: Mapping[str, ArmData],
    business: BusinessParams,
    previous: Mapping[str, SequentialResult] | None = None,
    expected_weights: Mapping[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ExperimentResults:
    """Results of `definition` from each arm's evidence (every arm must be present).

    SRM compares assignments with the definition's weights, or with `expected_weights` (e.g.
    `bandit.expected_shares` of the weight history) when weights moved. The sequential tests use
    alpha and `min_labels_per_arm` (as the mixture's tuning and the label floor) from the definition.
    """
    missing = [a.name for a in definition.arms if a.name not in data]
    if missing:
        raise ValueError(f"no evidence for arm(s) {missing}")
    names = [a.name for a in definition.arms]
    weights = expected_weights if expected_weights is not None else definition.weights()
    srm = srm_test([data[n].assigned for n in names], [weights.get(n, 0.0) for n in names])
    labelled = {n: _labelled(data[n]) for n in names}
    control = definition.control.name
    before = previous or {}
    tests = {
        n: _test(
            definition, labelled[n], labelled[control], (data[n], data[control]), business, before.get(n)
        )
        for n in names
        if n != control
    }
    decisions = decide_arms(
        tests,
        alpha=definition.alpha,
        min_labels=definition.min_labels_per_arm,
        lower_is_better=definition.lower_is_better,
        equivalence_margin=definition.equivalence_margin,
        max_labels=definition.max_labels_per_arm,
    )
    by_arm = {d.arm: d for d in decisions}
    arms = tuple(
        ArmResult(
            name=a.name,
            control=a.control,
            weight=a.weight,
            assigned=data[a.name].assigned,
            served=data[a.name].served,
            labelled=int(labelled[a.name][0].size),
            metrics=_metrics(labelled[a.name], data[a.name].threshold, business, resamples, seed),
            decision=by_arm.get(a.name),
        )
        for a in definition.arms
    )
    stored = {n: t for n, t in tests.items() if t is not None}
    return ExperimentResults(definition.name, definition.primary_metric, srm, arms, stored)


def _labelled(arm: ArmData) -> tuple[IntArray, FloatArray]:
    y = np.asarray(arm.y_true)
    if y.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return check_scores(y, arm.proba)


def _metrics(
    scored: tuple[IntArray, FloatArray], threshold: float, business: BusinessParams, resamples: int, seed: int
) -> dict[str, Estimate]:
    y, p = scored
    return {} if y.size == 0 else arm_metrics(y, p, threshold, business, resamples=resamples, seed=seed)


def _test(
    definition: ExperimentDefinition,
    arm: tuple[IntArray, FloatArray],
    control: tuple[IntArray, FloatArray],
    evidence: tuple[ArmData, ArmData],
    business: BusinessParams,
    before: SequentialResult | None,
) -> SequentialResult | None:
    """The arm's always-valid test against control on the primary metric (None without labels)."""
    if arm[0].size < 2 or control[0].size < 2:
        return before
    alpha, tuning = definition.alpha, float(definition.min_labels_per_arm)
    arm_data, control_data = evidence
    if definition.primary_metric == "auc":
        return sequential_auc_test(
            delong_auc_se(*arm), delong_auc_se(*control), arm[0].size, control[0].size, alpha, tuning, before
        )
    metric = definition.primary_metric
    values = MeanSummary.from_values(unit_values(metric, *arm, arm_data.threshold, business))
    reference = MeanSummary.from_values(unit_values(metric, *control, control_data.threshold, business))
    return sequential_mean_test(values, reference, alpha, tuning, before)

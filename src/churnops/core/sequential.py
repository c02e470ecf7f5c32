"""Always-valid comparison of an experiment arm against control, and the decision per arm.

The test is the mixture sequential probability ratio test (mSPRT, Johari et al. 2017) with a
normal mixing distribution, written as a confidence sequence on the difference (Howard et al.
2021, two-sided normal mixture). With `z` the difference over its standard error and
`n_eff = 2 * n_arm * n_control / (n_arm + n_control)` (effective labels per arm: n when both
arms have n), the arm differs from control at level alpha as soon as

    |z| >= b(r) = sqrt((1 + r) * log((1 + r) / (r * alpha**2))),   r = tuning_n / n_eff

which is the same event as the mixture likelihood ratio reaching 1/alpha when the mixing
variance is the variance of the estimated difference at `tuning_n` labels per arm. The boundary
is tightest (|z| of about 3.0 at alpha 0.05, against 1.96 for a single look) around `n_eff` of
7-10 times `tuning_n` and widens slowly (like sqrt(log n)) beyond. `tuning_n` must be fixed
before the experiment starts (results use the definition's minimum labels per arm), never tuned
on the data. Because the boundary holds at every sample size at once, results may be read after
every label (continuous peeking) and the false-positive rate stays at or below alpha.

Why this is valid with unequal, time-varying arm sizes: the score `z * sqrt(I)` (I the inverse
variance of the difference) of a two-sample comparison of means has independent increments in
information time (Jennison & Turnbull's canonical joint distribution), so the normal-mixture
boundary for Brownian motion applies. Per-unit variances are estimated (plug-in), which makes the
guarantee asymptotic (Waudby-Smith et al. 2021, "Time-uniform central limit theory"): hold
decisions until each arm has a few hundred labels (`min_labels`).

AUC is not a mean over units. For it we apply the same boundary to the DeLong z-statistic of
AUC(arm) - AUC(control) (independent customers per arm, so the variances add). The AUC's Hajek
projection is a sum of independent per-customer terms, so the same asymptotic argument holds, but
the plug-in is rougher at small counts: the A/A simulations in tests/model measure its
false-positive rate beside the per-unit metrics'.

Across arms, Holm's correction is applied to the always-valid p-values; Holm is monotone in its
inputs and running-minimum p-values only fall, so no look can reject a true null that the final
look would not — the family-wise error stays at most alpha over all looks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from churnops.core.stats import MeanSummary, holm

Decision = Literal["keep running", "better", "worse", "no difference"]


@dataclass(frozen=True)
class SequentialResult:
    """An arm against control at one look: difference (arm - control), its standard error and z,
    the confidence sequence [low, high] and the always-valid p-value (both running over looks when
    the previous look was passed in)."""

    difference: float
    se: float
    z: float
    low: float
    high: float
    p_value: float
    n_arm: int
    n_control: int
    alpha: float
    tuning_n: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN and infinities become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequentialResult:
        """Inverse of `to_dict`, for the stored previous look (None: an unbounded end, else NaN)."""

        def number(key: str, missing: float = math.nan) -> float:
            value = data[key]
            return missing if value is None else float(value)

        return cls(
            difference=number("difference"),
            se=number("se"),
            z=number("z"),
            low=number("low", -math.inf),
            high=number("high", math.inf),
            p_value=number("p_value"),
            n_arm=int(data["n_arm"]),
            n_control=int(data["n_control"]),
            alpha=number("alpha"),
            tuning_n=number("tuning_n"),
        )


@dataclass(frozen=True)
class ArmDecision:
    """What the results say about one arm: the decision, one line of reason and the evidence."""

    arm: str
    decision: Decision
    reason: str
    p_value: float  # always-valid, unadjusted
    p_adjusted: float  # Holm across the experiment's arms
    test: SequentialResult | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "arm": self.arm,
            "decision": self.decision,
            "reason": self.reason,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "test": None if self.test is None else self.test.to_dict(),
        }


def mixture_boundary(n_eff: float, tuning_n: float, alpha: float) -> float:
    """The |z| an arm must reach at information `n_eff` (see the module docstring)."""
    _check(alpha, tuning_n)
    if n_eff <= 0:
        return math.inf
    r = tuning_n / n_eff
    return math.sqrt((1 + r) * math.log((1 + r) / (r * alpha * alpha)))


def always_valid_p(z: float, n_eff: float, tuning_n: float) -> float:
    """1 / (mixture likelihood ratio) at this look, capped at 1: below alpha exactly when
    `|z| >= mixture_boundary(n_eff, tuning_n, alpha)`."""
    if n_eff <= 0 or not math.isfinite(z):
        return 1.0 if not math.isinf(z) else 0.0
    r = tuning_n / n_eff
    log_ratio = z * z / (2 * (1 + r)) - 0.5 * math.log((1 + r) / r)
    return 1.0 if log_ratio <= 0 else math.exp(-log_ratio)


def sequential_test(
    difference: float,
    se: float,
    n_arm: int,
    n_control: int,
    alpha: float,
    tuning_n: float,
    previous: SequentialResult | None = None,
) -> SequentialResult:
    """The always-valid test of one look, from an estimated difference and its standard error.

    With `previous` (the stored result of the last look) the p-value is the running minimum and
    the interval the running intersection — what a results page must show so a call never flips
    back. Stored results from a different alpha or tuning_n are refused.
    """
    _check(alpha, tuning_n)
    n_eff = 2 * n_arm * n_control / (n_arm + n_control) if n_arm > 0 and n_control > 0 else 0.0
    if not (math.isfinite(se) and math.isfinite(difference)) or n_eff == 0:
        result = SequentialResult(
            difference, se, math.nan, -math.inf, math.inf, 1.0, n_arm, n_control, alpha, tuning_n
        )
    elif se == 0:
        p = 1.0 if difference == 0 else 0.0
        result = SequentialResult(
            difference, 0.0, math.nan, difference, difference, p, n_arm, n_control, alpha, tuning_n
        )
    else:
        z = difference / se
        half = mixture_boundary(n_eff, tuning_n, alpha) * se
        p = always_valid_p(z, n_eff, tuning_n)
        result = SequentialResult(
            difference, se, z, difference - half, difference + half, p, n_arm, n_control, alpha, tuning_n
        )
    return _running(result, previous)


def sequential_mean_test(
    arm: MeanSummary,
    control: MeanSummary,
    alpha: float,
    tuning_n: float,
    previous: SequentialResult | None = None,
) -> SequentialResult:
    """Always-valid test of mean(arm) - mean(control) on a per-unit metric (log loss, Brier, profit
    per labelled prediction), from each arm's count, mean and variance (Welch standard error)."""
    if arm.n < 2 or control.n < 2:
        return sequential_test(math.nan, math.nan, arm.n, control.n, alpha, tuning_n, previous)
    se = math.sqrt(arm.variance / arm.n + control.variance / control.n)
    return sequential_test(arm.mean - control.mean, se, arm.n, control.n, alpha, tuning_n, previous)


def sequential_auc_test(
    arm_auc: tuple[float, float],
    control_auc: tuple[float, float],
    n_arm: int,
    n_control: int,
    alpha: float,
    tuning_n: float,
    previous: SequentialResult | None = None,
) -> SequentialResult:
    """Always-valid test of AUC(arm) - AUC(control) from each arm's (AUC, DeLong standard error),
    as `stats.delong_auc_se` returns them; arms hold different customers, so variances add.
    Asymptotic, like the per-unit test but rougher at small counts (module docstring)."""
    (a, se_a), (c, se_c) = arm_auc, control_auc
    return sequential_test(a - c, math.hypot(se_a, se_c), n_arm, n_control, alpha, tuning_n, previous)


def decide_arms(
    tests: Mapping[str, SequentialResult | None],
    *,
    alpha: float,
    min_labels: int,
    lower_is_better: bool,
    equivalence_margin: float | None = None,
    max_labels: int | None = None,
) -> tuple[ArmDecision, ...]:
    """A decision for every non-control arm, in the order given, with Holm across all of them.

    `keep running` until the arm and control each have `min_labels` labels, and while nothing is
    significant; `better` / `worse` when the Holm-adjusted always-valid p-value is below alpha
    (direction from the difference and `lower_is_better`); `no difference` when the confidence
    sequence lies within +/- `equivalence_margin`, or when both sides reached `max_labels` with no
    significant difference. An arm without a test (no labels) counts as p = 1 in Holm.
    """
    names = list(tests)
    raw = [_ready_p(tests[name], min_labels) for name in names]
    adjusted = holm(raw)
    return tuple(
        _decide(
            name,
            tests[name],
            raw[i],
            float(adjusted[i]),
            alpha,
            min_labels,
            lower_is_better,
            equivalence_margin,
            max_labels,
        )
        for i, name in enumerate(names)
    )


def _decide(
    name: str,
    test: SequentialResult | None,
    p: float,
    p_adj: float,
    alpha: float,
    min_labels: int,
    lower_is_better: bool,
    margin: float | None,
    max_labels: int | None,
) -> ArmDecision:
    def verdict(decision: Decision, reason: str) -> ArmDecision:
        return ArmDecision(name, decision, reason, p, p_adj, test)

    if test is None or test.n_arm < min_labels or test.n_control < min_labels:
        n_arm, n_control = (0, 0) if test is None else (test.n_arm, test.n_control)
        return verdict("keep running", f"{n_arm} of {min_labels} labels for the arm, {n_control} for control")
    evidence = (
        f"difference {test.difference:+.4g} [{test.low:+.4g}, {test.high:+.4g}], "
        f"always-valid p {test.p_value:.3g} (Holm {p_adj:.3g})"
    )
    if p_adj < alpha:
        # p <= p_adj < alpha, so the (running) sequence excludes 0 and its side gives the direction.
        below_zero = test.high < 0 if (test.high < 0 or test.low > 0) else test.difference < 0
        improved = below_zero == lower_is_better
        return verdict("better" if improved else "worse", f"{evidence} < alpha {alpha:g}")
    if margin is not None and -margin < test.low and test.high < margin:
        return verdict("no difference", f"{evidence}: the interval lies within +/-{margin:g}")
    if max_labels is not None and min(test.n_arm, test.n_control) >= max_labels:
        return verdict("no difference", f"{evidence}: {max_labels} labels reached without a difference")
    return verdict("keep running", f"{evidence}: not significant yet")


def _ready_p(test: SequentialResult | None, min_labels: int) -> float:
    if test is None or test.n_arm < min_labels or test.n_control < min_labels:
        return 1.0
    return test.p_value


def _running(result: SequentialResult, previous: SequentialResult | None) -> SequentialResult:
    if previous is None:
        return result
    if (previous.alpha, previous.tuning_n) != (result.alpha, result.tuning_n):
        raise ValueError(
            "the previous look used a different alpha or tuning_n: its sequence does not carry over"
        )
    return replace(
        result,
        low=max(result.low, previous.low),
        high=min(result.high, previous.high),
        p_value=min(result.p_value, previous.p_value),
    )


def _check(alpha: float, tuning_n: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not tuning_n > 0:
        raise ValueError(f"tuning_n must be > 0, got {tuning_n}")

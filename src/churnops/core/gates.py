"""Promotion gates: pure functions from evidence arrays to verdicts, and the policy that runs them.

The policy (which gates, their limits) is params.yaml's `gates:` mapping, parsed by
core.gate_policy.parse_gates.

Statistical gates decide on an interval, never on point estimates:
- discrimination passes when the two-sided (1 - alpha) interval of AUC(candidate) - AUC(champion),
  on the same rows (DeLong for correlated curves, or a paired bootstrap), lies wholly above
  `min_auc_delta`. That is a one-sided test at alpha / 2: of models no better than the champion,
  at most alpha / 2 pass (measured in tests/model/test_gates_simulation.py).
- profit passes when the (1 - alpha) paired-bootstrap interval of the per-prediction profit
  difference (each model at its own threshold) lies above minus the allowed loss (`tolerance`
  times the champion's profit per prediction, at least `tolerance_per_prediction`): evidence
  that the candidate is not worse than the champion beyond the tolerance.

A verdict's `value` is the number compared with its `limit` (for the statistical gates, the end of
the interval nearest the limit); `detail` holds the evidence (difference, interval, p-value, ...)
and `reason` says it in one line.

First version (no champion): discrimination compares the candidate with a no-skill scorer (its
AUC interval must lie above 0.5 + min_auc_delta) and profit with contacting nobody (profit 0), so a
label-shuffled first model is refused too; every other gate applies unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from churnops.core.auc import AucComparison, auc_delong_interval, delong_test, paired_bootstrap_auc
from churnops.core.fairness import fairness_gaps
from churnops.core.gate_policy import (
    CalibrationGate,
    DiscriminationGate,
    FairnessGate,
    GatesPolicy,
    LatencyGate,
    ProfitGate,
)
from churnops.core.metrics import check_scores, reliability_curve
from churnops.core.params import BusinessParams
from churnops.core.performance_stats import expected_ece
from churnops.core.stats import bootstrap_mean, profit_values

NO_SKILL_AUC = 0.5


@dataclass(frozen=True)
class GateVerdict:
    """One gate's outcome: the value compared with the limit, pass or fail, the evidence, one line."""

    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes None)."""
        return _json(
            {
                "name": self.name,
                "value": self.value,
                "limit": self.limit,
                "passed": self.passed,
                "reason": self.reason,
                "detail": self.detail,
            }
        )


@dataclass(frozen=True)
class PolicyResult:
    """Every verdict, whether all passed, and whether a human must approve before promotion."""

    verdicts: tuple[GateVerdict, ...]
    approval_required: bool

    @property
    def passed(self) -> bool:
        """All gates passed."""
        return all(v.passed for v in self.verdicts)

    @property
    def status(self) -> Literal["passed", "failed", "pending_approval"]:
        """`failed` if a gate failed, else `pending_approval` when approval is required, else `passed`."""
        if not self.passed:
            return "failed"
        return "pending_approval" if self.approval_required else "passed"

    @property
    def failed(self) -> tuple[GateVerdict, ...]:
        """The verdicts that failed, in policy order."""
        return tuple(v for v in self.verdicts if not v.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "passed": self.passed,
            "approval_required": self.approval_required,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


@dataclass(frozen=True)
class GateEvidence:
    """Everything the gates look at, measured by the caller on the candidate (and champion).

    Probabilities and labels are on the same evaluation rows, which neither model trained on.
    `None` means "not measured": an enabled gate without its evidence fails (except fairness with
    an empty `groups` mapping, which passes: the spec has no protected columns).
    """

    y_true: ArrayLike
    candidate_proba: ArrayLike
    candidate_threshold: float
    champion_proba: ArrayLike | None = None
    champion_threshold: float | None = None
    groups: Mapping[str, ArrayLike] | None = None
    latencies_ms: ArrayLike | None = None
    golden_reproduced: bool | None = None
    validation_passed: bool | None = None


def evaluate_gates(policy: GatesPolicy, evidence: GateEvidence, business: BusinessParams) -> PolicyResult:
    """Run every enabled gate on the evidence, in policy order."""
    e = evidence
    verdicts: list[GateVerdict] = []
    if policy.discrimination is not None:
        verdicts.append(
            discrimination_gate(e.y_true, e.candidate_proba, e.champion_proba, policy.discrimination)
        )
    if policy.calibration is not None:
        verdicts.append(calibration_gate(e.y_true, e.candidate_proba, policy.calibration))
    if policy.fairness is not None:
        verdicts.extend(
            fairness_gate(e.groups, e.y_true, e.candidate_proba, e.candidate_threshold, policy.fairness)
        )
    if policy.latency is not None:
        verdicts.append(latency_gate(e.latencies_ms, policy.latency))
    if policy.profit is not None:
        verdicts.append(
            profit_gate(
                e.y_true,
                e.candidate_proba,
                e.candidate_threshold,
                e.champion_proba,
                e.champion_threshold,
                business,
                policy.profit,
            )
        )
    if policy.golden:
        verdicts.append(flag_gate("golden", e.golden_reproduced, "golden requests reproduced"))
    if policy.validation:
        verdicts.append(flag_gate("validation", e.validation_passed, "data validation passed"))
    return PolicyResult(tuple(verdicts), policy.approval == "required")


def discrimination_gate(
    y_true: ArrayLike, candidate: ArrayLike, champion: ArrayLike | None, gate: DiscriminationGate
) -> GateVerdict:
    """AUC(candidate) - AUC(champion) on the same rows; passes when its (1 - alpha) interval lies
    above `min_auc_delta`. Without a champion: the candidate's AUC interval above 0.5 + delta."""
    confidence = 1 - gate.alpha
    if champion is None:
        est = auc_delong_interval(y_true, candidate, confidence)
        limit = NO_SKILL_AUC + gate.min_auc_delta
        passed = bool(est.low > limit)
        detail = {
            "auc_candidate": est.value,
            "interval": [est.low, est.high],
            "method": "delong",
            "baseline": "no champion: a no-skill scorer (AUC 0.5)",
            "n": est.n,
            "alpha": gate.alpha,
        }
        margin = f" + {gate.min_auc_delta:g}" if gate.min_auc_delta else ""
        reason = f"AUC {est.value:.4f} [{est.low:.4f}, {est.high:.4f}] vs a coin's 0.5{margin}"
        return GateVerdict("discrimination", est.low, limit, passed, detail, reason)
    if gate.method == "delong":
        cmp = delong_test(y_true, candidate, champion, confidence, gate.min_auc_delta)
    else:
        cmp = paired_bootstrap_auc(
            y_true, candidate, champion, confidence, gate.min_auc_delta, gate.resamples, gate.seed
        )
    return _discrimination_verdict(cmp, gate)


def _discrimination_verdict(cmp: AucComparison, gate: DiscriminationGate) -> GateVerdict:
    detail = {
        "auc_candidate": cmp.auc_a,
        "auc_champion": cmp.auc_b,
        "difference": cmp.difference,
        "interval": [cmp.low, cmp.high],
        "p_value": cmp.p_value,
        "method": cmp.method,
        "alpha": gate.alpha,
        "n": cmp.n,
        "n_positive": cmp.n_positive,
    }
    reason = (
        f"AUC {cmp.difference:+.4f} [{cmp.low:+.4f}, {cmp.high:+.4f}] vs champion "
        f"({cmp.auc_a:.4f} vs {cmp.auc_b:.4f}, p {cmp.p_value:.3g}): interval "
        f"{'above' if cmp.better else 'not above'} min_auc_delta {gate.min_auc_delta:g}"
    )
    value = None if math.isnan(cmp.low) else cmp.low
    return GateVerdict("discrimination", value, gate.min_auc_delta, cmp.better, detail, reason)


def calibration_gate(y_true: ArrayLike, proba: ArrayLike, gate: CalibrationGate) -> GateVerdict:
    """Expected calibration error (equal-width bins) beyond what chance gives, at most `max_ece`.

    Perfectly calibrated probabilities still show an ECE of about sqrt(2/pi) x sum_bins
    sqrt(sum p(1-p)) / n by chance (~0.036 on 600 rows, ~0.006 on 20,000): the gate judges the
    excess over that figure, so a small holdout does not refuse a calibrated model."""
    y, p = check_scores(y_true, proba)
    ece = reliability_curve(y, p, gate.bins).ece
    chance = expected_ece(p, gate.bins)
    excess = max(ece - chance, 0.0)
    passed = excess <= gate.max_ece
    detail = {"bins": gate.bins, "ece": ece, "chance_ece": chance, "n": int(y.size)}
    reason = (
        f"ECE {ece:.4f} ({chance:.4f} by chance on {y.size} rows): excess {excess:.4f} "
        f"{'<=' if passed else '>'} {gate.max_ece:g}"
    )
    return GateVerdict("calibration", excess, gate.max_ece, passed, detail, reason)


def fairness_gate(
    groups: Mapping[str, ArrayLike] | None,
    y_true: ArrayLike,
    proba: ArrayLike,
    threshold: float,
    gate: FairnessGate,
) -> tuple[GateVerdict, GateVerdict]:
    """Largest demographic-parity and equal-opportunity gaps across protected columns, each at
    most its maximum (groups smaller than `min_group_size` are left out as too noisy)."""
    names = ("fairness.demographic_parity", "fairness.equal_opportunity")
    limits = (gate.max_demographic_parity, gate.max_equal_opportunity)
    if groups is None:
        return _missing(names[0], limits[0], "groups"), _missing(names[1], limits[1], "groups")
    if not groups:
        reason = "no protected columns in the spec"
        return (
            GateVerdict(names[0], 0.0, limits[0], True, {"columns": {}}, reason),
            GateVerdict(names[1], 0.0, limits[1], True, {"columns": {}}, reason),
        )
    gaps = fairness_gaps(groups, y_true, proba, threshold, min_count=gate.min_group_size)
    dp = {col: g.demographic_parity_difference for col, g in gaps.items()}
    eo = {col: g.equal_opportunity_difference for col, g in gaps.items()}
    return _gap_verdict(names[0], dp, limits[0]), _gap_verdict(names[1], eo, limits[1])


def _gap_verdict(name: str, per_column: dict[str, float], limit: float) -> GateVerdict:
    defined = {col: gap for col, gap in per_column.items() if not math.isnan(gap)}
    if not defined:
        return GateVerdict(
            name, None, limit, True, {"columns": per_column}, "no column has two groups to compare"
        )
    worst = max(defined, key=lambda col: defined[col])
    value = defined[worst]
    reason = f"largest gap {value:.4f} ({worst}) {'<=' if value <= limit else '>'} {limit:g}"
    return GateVerdict(name, value, limit, value <= limit, {"columns": per_column, "worst": worst}, reason)


def latency_gate(latencies_ms: ArrayLike | None, gate: LatencyGate) -> GateVerdict:
    """p99 of measured single-row latencies (ms) at most the budget; p99 is an observed value
    (the 'higher' quantile), so under 100 measurements it is the maximum."""
    if latencies_ms is None:
        return _missing("latency", gate.max_p99_ms, "latencies_ms")
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.ndim != 1 or lat.size == 0 or not np.all(np.isfinite(lat)) or np.any(lat < 0):
        return _missing("latency", gate.max_p99_ms, "latencies_ms (non-empty, finite, >= 0)")
    p99 = float(np.quantile(lat, 0.99, method="higher"))
    detail = {"n": int(lat.size), "p50_ms": float(np.median(lat)), "max_ms": float(lat.max())}
    verb = "<=" if p99 <= gate.max_p99_ms else ">"
    reason = f"p99 {p99:.3f} ms {verb} {gate.max_p99_ms:g} ms over {lat.size} calls"
    return GateVerdict("latency", p99, gate.max_p99_ms, p99 <= gate.max_p99_ms, detail, reason)


def profit_gate(
    y_true: ArrayLike,
    candidate: ArrayLike,
    candidate_threshold: float,
    champion: ArrayLike | None,
    champion_threshold: float | None,
    business: BusinessParams,
    gate: ProfitGate,
) -> GateVerdict:
    """Per-prediction profit of the candidate at its threshold minus the champion's at its own
    (contacting nobody without a champion); passes when the paired-bootstrap (1 - alpha)
    interval lies above minus the allowed loss (see `ProfitGate`)."""
    y, p = check_scores(y_true, candidate)
    gain = profit_values(y, p, candidate_threshold, business)
    if champion is None or champion_threshold is None:
        baseline = np.zeros_like(gain)
        against = "no champion: contacting nobody"
    else:
        baseline = profit_values(y, champion, champion_threshold, business)
        against = "champion"
    est = bootstrap_mean(gain - baseline, 1 - gate.alpha, gate.resamples, gate.seed)
    allowed = max(gate.tolerance * abs(float(baseline.mean())), gate.tolerance_per_prediction)
    limit = -allowed
    passed = bool(est.low >= limit)
    detail = {
        "profit_candidate": float(gain.mean()),
        "profit_baseline": float(baseline.mean()),
        "difference": est.value,
        "interval": [est.low, est.high],
        "allowed_loss": allowed,
        "baseline": against,
        "alpha": gate.alpha,
        "n": est.n,
        "method": est.method,
    }
    reason = (
        f"profit per prediction {est.value:+.4f} [{est.low:+.4f}, {est.high:+.4f}] vs {against}: "
        f"interval {'above' if passed else 'reaches below'} {limit:+.4f} (allowed loss)"
    )
    return GateVerdict("profit", est.low, limit, passed, detail, reason)


def flag_gate(name: str, ok: bool | None, what: str) -> GateVerdict:
    """A yes/no gate (golden requests reproduced, validation passed); unknown counts as failed."""
    if ok is None:
        return _missing(name, 1.0, name)
    return GateVerdict(name, float(ok), 1.0, bool(ok), {}, f"{what}: {'yes' if ok else 'no'}")


def _missing(name: str, limit: float, what: str) -> GateVerdict:
    return GateVerdict(name, None, limit, False, {"missing": what}, f"no evidence: {what} not measured")


def _json(value: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats with None, recursively, for strict JSON."""
    return {key: _json_value(item) for key, item in value.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return _json(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value

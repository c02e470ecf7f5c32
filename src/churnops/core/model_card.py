"""A Markdown model card: what the model is for, how it was chosen and how it behaves.

The card is rendered from plain values gathered by the evaluate job, so it is a pure
function of the evaluation and can be diffed between model versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from churnops.core.fairness import FairnessGap, SliceResult

# Above this, a demographic-parity or equal-opportunity gap gets a caution in the card.
FAIRNESS_CAUTION_GAP = 0.1

HOLDOUT_METRICS = (
    "roc_auc", "pr_auc", "log_loss", "brier", "ece",
    "precision", "recall", "f1", "accuracy", "positive_rate", "prevalence", "n",
)  # fmt: skip

STANDARD_LIMITATIONS = (
    "Metrics come from a holdout drawn from the same snapshot as the training data; "
    "they hold only while live data resembles it (watch the drift monitors).",
    "The threshold and expected profit depend on the business assumptions above; "
    "re-run the evaluation when they change.",
    "Scores rank customers by churn risk; they do not say why a customer will leave "
    "or whether an offer will work for that customer.",
)


@dataclass(frozen=True)
class CandidateSummary:
    """One trained candidate as it appears in the comparison table."""

    name: str
    validation_roc_auc: float
    train_seconds: float
    parameters: str = "default"  # or e.g. "searched (42 trials)"


@dataclass(frozen=True)
class ModelCardData:
    """Everything the card shows; plain values so any job can fill it.

    `business` holds contact_cost, saved_customer_value and offer_success_rate;
    `plots` maps a caption to a PNG path relative to the card file.
    """

    model_name: str
    model_version: str
    spec_name: str
    n_rows: int
    data_hash: str
    feature_set_version: str
    candidates: Sequence[CandidateSummary]
    chosen_candidate: str
    holdout_metrics: Mapping[str, float]
    threshold: float
    expected_profit: float
    contacted_fraction: float
    business: Mapping[str, float]
    intended_use: str = (
        "Rank current customers by their probability of churning so the retention team "
        "can contact those above the decision threshold with an offer."
    )
    n_holdout: int | None = None
    cv_roc_auc_mean: float | None = None
    cv_roc_auc_std: float | None = None
    cv_folds: int | None = None
    slices: Mapping[str, Sequence[SliceResult]] = field(default_factory=dict)
    fairness: Mapping[str, FairnessGap] = field(default_factory=dict)
    limitations: Sequence[str] = ()
    plots: Mapping[str, str] = field(default_factory=dict)
    calibration_method: str | None = None  # none | platt | isotonic
    ece_uncalibrated: float | None = None


def render_model_card(card: ModelCardData) -> str:
    """Render the card as Markdown, one section per heading."""
    sections = (
        _header(card),
        _data(card),
        _candidates(card),
        _holdout(card),
        _threshold(card),
        _slices(card),
        _fairness(card),
        _calibration(card),
        _limitations(card),
        _plots(card),
    )
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _header(card: ModelCardData) -> list[str]:
    return [
        f"# Model card: {card.model_name} v{card.model_version}",
        "",
        "## Intended use",
        "",
        card.intended_use,
    ]


def _data(card: ModelCardData) -> list[str]:
    lines = [
        "## Data",
        "",
        f"- Dataset spec: `{card.spec_name}`",
        f"- Rows: {card.n_rows:,}",
    ]
    if card.n_holdout is not None:
        lines.append(f"- Holdout rows: {card.n_holdout:,}")
    lines += [
        f"- Content hash: `{card.data_hash}`",
        f"- Feature-set version: `{card.feature_set_version}`",
    ]
    return lines


def _candidates(card: ModelCardData) -> list[str]:
    rows = [
        [
            _cell(c.name) + (" (chosen)" if c.name == card.chosen_candidate else ""),
            _num(c.validation_roc_auc),
            f"{c.train_seconds:.1f}",
            _cell(c.parameters),
        ]
        for c in card.candidates
    ]
    return [
        "## Candidates",
        "",
        *_table(["Candidate", "Validation ROC AUC", "Train seconds", "Parameters"], rows),
        "",
        f"Chosen candidate: **{card.chosen_candidate}**",
    ]


def _holdout(card: ModelCardData) -> list[str]:
    names = [m for m in HOLDOUT_METRICS if m in card.holdout_metrics]
    names += sorted(set(card.holdout_metrics) - set(names))
    rows = [[name, _metric(name, card.holdout_metrics[name])] for name in names]
    lines = ["## Holdout metrics", "", *_table(["Metric", "Value"], rows)]
    if card.cv_roc_auc_mean is not None:
        std = f" ± {card.cv_roc_auc_std:.4f}" if card.cv_roc_auc_std is not None else ""
        folds = f" over {card.cv_folds} folds" if card.cv_folds else ""
        lines += ["", f"Cross-validated ROC AUC{folds}: {card.cv_roc_auc_mean:.4f}{std}"]
    return lines


def _threshold(card: ModelCardData) -> list[str]:
    business = card.business
    return [
        "## Decision threshold",
        "",
        f"Threshold: **{card.threshold:.4f}** (predict churn when probability >= threshold), "
        f"chosen to maximise expected profit on the holdout.",
        "",
        "Business assumptions:",
        "",
        f"- Contact cost: {_money(business.get('contact_cost', math.nan))}",
        f"- Saved customer value: {_money(business.get('saved_customer_value', math.nan))}",
        f"- Offer success rate: {_pct(business.get('offer_success_rate', math.nan))}",
        "",
        _profit_line(card),
    ]


def _profit_line(card: ModelCardData) -> str:
    if card.contacted_fraction == 0.0:
        return "No threshold earns a profit under these assumptions: the model recommends contacting nobody."
    return (
        f"Expected profit on the holdout: **{_money(card.expected_profit)}**, "
        f"contacting {_pct(card.contacted_fraction)} of customers."
    )


def _slices(card: ModelCardData) -> list[str]:
    if not card.slices:
        return []
    header = ["Slice", "Value", "n", "Prevalence", "Positive rate", "ROC AUC", "Precision", "Recall"]
    rows = [
        [
            _cell(r.column),
            _cell(r.value),
            f"{r.n:,}",
            _num(r.prevalence),
            _num(r.positive_rate),
            _num(r.roc_auc),
            _num(r.precision),
            _num(r.recall),
        ]
        for results in card.slices.values()
        for r in results
    ]
    return ["## Slices", "", *_table(header, rows)]


def _fairness(card: ModelCardData) -> list[str]:
    if not card.fairness:
        return []
    header = ["Protected attribute", "Demographic parity difference", "Equal opportunity difference"]
    gaps = list(card.fairness.values())
    rows = [
        [_cell(g.column), _num(g.demographic_parity_difference), _num(g.equal_opportunity_difference)]
        for g in gaps
    ]
    lines = ["## Fairness", "", *_table(header, rows), "", *(_group_line(g) for g in gaps)]
    cautions = [
        f"> **Caution:** on `{g.column}` a gap of {g.max_gap:.3f} exceeds {FAIRNESS_CAUTION_GAP}; "
        "review the groups' rates before promoting this model."
        for g in gaps
        if g.max_gap > FAIRNESS_CAUTION_GAP
    ]
    return [*lines, "", *cautions] if cautions else lines


def _group_line(gap: FairnessGap) -> str:
    parts = [
        f"{_cell(g.group)} (n={g.n:,}): flagged {_pct(g.positive_rate)}, TPR {_pct(g.true_positive_rate)}"
        for g in gap.groups
    ]
    return f"- `{gap.column}`: " + "; ".join(parts)


_CALIBRATION_METHODS = {
    "none": "none (the model's own probabilities had the lowest validation log loss)",
    "platt": "Platt scaling (a logistic map of the model's log-odds)",
    "isotonic": "isotonic (centred isotonic regression)",
}


def _calibration(card: ModelCardData) -> list[str]:
    ece = card.holdout_metrics.get("ece", math.nan)
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error (ECE) on the holdout: {_num(ece)} "
        "(mean gap between predicted probability and observed churn rate, weighted by bin size).",
    ]
    if card.calibration_method is not None:
        method = _CALIBRATION_METHODS.get(card.calibration_method, card.calibration_method)
        before = (
            f" ECE before calibration: {_num(card.ece_uncalibrated)}."
            if card.ece_uncalibrated is not None
            else ""
        )
        lines += [
            "",
            f"Calibration map, chosen on validation data by cross-fitted log loss: {method}.{before} "
            "Reason codes are contributions to the uncalibrated log-odds (the map is monotone, so "
            "it changes no ranking and no reason's sign).",
        ]
    return lines


def _limitations(card: ModelCardData) -> list[str]:
    return ["## Limitations", "", *(f"- {text}" for text in (*card.limitations, *STANDARD_LIMITATIONS))]


def _plots(card: ModelCardData) -> list[str]:
    if not card.plots:
        return []
    return ["## Plots", "", *(f"![{caption}]({path})" for caption, path in card.plots.items())]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _cell(text: str) -> str:
    """Escape pipes so a category name cannot break the table."""
    return text.replace("|", "\\|")


def _metric(name: str, value: float) -> str:
    return f"{int(value):,}" if name == "n" and not math.isnan(value) else _num(value)


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _money(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.2f}"

"""The Markdown model card shows every section with the numbers it was given."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from churnops.core.fairness import FairnessGap, GroupRates, SliceResult
from churnops.core.model_card import CandidateSummary, ModelCardData, render_model_card

pytestmark = pytest.mark.unit


@pytest.fixture
def card() -> ModelCardData:
    return ModelCardData(
        model_name="churn-telco",
        model_version="7",
        spec_name="telco",
        n_rows=7043,
        n_holdout=1409,
        data_hash="sha256:abc123",
        feature_set_version="telco-0123456789",
        candidates=(
            CandidateSummary("logreg", 0.8412, 1.23),
            CandidateSummary("lightgbm", 0.8533, 12.5),
        ),
        chosen_candidate="lightgbm",
        holdout_metrics={"roc_auc": 0.8471, "pr_auc": 0.6612, "ece": 0.0213, "n": 1409.0, "recall": 0.7},
        cv_roc_auc_mean=0.8455,
        cv_roc_auc_std=0.0121,
        cv_folds=5,
        threshold=0.1834,
        expected_profit=12345.5,
        contacted_fraction=0.42,
        business={"contact_cost": 5.0, "saved_customer_value": 200.0, "offer_success_rate": 0.3},
        slices={
            "Contract": [
                SliceResult("Contract", "Month-to-month", 770, 0.42, 0.7, 0.75, 0.5, 0.9),
                SliceResult("Contract", "Two year", 340, 0.03, 0.01, math.nan, 0.0, 0.0),
            ]
        },
        fairness={
            "gender": FairnessGap(
                "gender",
                0.02,
                0.03,
                (GroupRates("Female", 700, 0.41, 0.8), GroupRates("Male", 709, 0.43, 0.83)),
            ),
            "SeniorCitizen": FairnessGap(
                "SeniorCitizen",
                0.25,
                0.05,
                (GroupRates("0", 1180, 0.38, 0.8), GroupRates("1", 229, 0.63, 0.85)),
            ),
        },
        limitations=("Trained on 2019 data only.",),
        plots={"ROC curve": "plots/roc.png", "Calibration": "plots/calibration.png"},
    )


def test_card_has_every_section(card: ModelCardData) -> None:
    text = render_model_card(card)
    for heading in (
        "# Model card: churn-telco v7",
        "## Intended use",
        "## Data",
        "## Candidates",
        "## Holdout metrics",
        "## Decision threshold",
        "## Slices",
        "## Fairness",
        "## Calibration",
        "## Limitations",
        "## Plots",
    ):
        assert heading in text


def test_card_shows_the_numbers(card: ModelCardData) -> None:
    text = render_model_card(card)
    assert "`telco`" in text
    assert "7,043" in text
    assert "sha256:abc123" in text
    assert "telco-0123456789" in text
    assert "| lightgbm (chosen) | 0.8533 | 12.5 |" in text
    assert "| logreg | 0.8412 | 1.2 |" in text
    assert "Chosen candidate: **lightgbm**" in text
    assert "| roc_auc | 0.8471 |" in text
    assert "| n | 1,409 |" in text
    assert "0.8455 ± 0.0121" in text
    assert "5 folds" in text
    assert "**0.1834**" in text
    assert "12,345.50" in text
    assert "42.0%" in text
    assert "Offer success rate: 30.0%" in text
    assert "| Contract | Two year | 340 | 0.0300 | 0.0100 | n/a |" in text
    assert "Expected calibration error (ECE) on the holdout: 0.0213" in text
    assert "- Trained on 2019 data only." in text


def test_fairness_caution_only_above_threshold(card: ModelCardData) -> None:
    text = render_model_card(card)
    assert "**Caution:** on `SeniorCitizen`" in text
    assert "on `gender`" not in text
    calm = replace(card, fairness={"gender": card.fairness["gender"]})
    assert "Caution" not in render_model_card(calm)


def test_plots_are_relative_image_links(card: ModelCardData) -> None:
    text = render_model_card(card)
    assert "![ROC curve](plots/roc.png)" in text
    assert "![Calibration](plots/calibration.png)" in text


def test_optional_sections_are_left_out(card: ModelCardData) -> None:
    bare = replace(card, slices={}, fairness={}, plots={}, cv_roc_auc_mean=None, cv_roc_auc_std=None)
    text = render_model_card(bare)
    assert "## Slices" not in text
    assert "## Fairness" not in text
    assert "## Plots" not in text
    assert "Cross-validated" not in text
    assert "## Limitations" in text


def test_pipes_in_category_names_do_not_break_tables(card: ModelCardData) -> None:
    odd = SliceResult("Contract", "a|b", 50, 0.1, 0.1, 0.6, 0.2, 0.3)
    text = render_model_card(replace(card, slices={"Contract": [odd]}))
    assert "| Contract | a\\|b | 50 |" in text


def test_unprofitable_campaign_says_contact_nobody(card: ModelCardData) -> None:
    text = render_model_card(replace(card, threshold=1.0, expected_profit=0.0, contacted_fraction=0.0))
    assert "contacting nobody" in text


def test_card_shows_the_calibration_map_and_how_parameters_were_set(card: ModelCardData) -> None:
    searched = replace(
        card,
        candidates=(CandidateSummary("lightgbm", 0.8533, 12.5, "searched, 40 trials in 48 s"),),
        calibration_method="platt",
        ece_uncalibrated=0.0612,
    )
    text = render_model_card(searched)
    assert "| Parameters |" in text
    assert "searched, 40 trials in 48 s" in text
    assert "Platt scaling" in text
    assert "ECE before calibration: 0.0612" in text
    assert "uncalibrated log-odds" in text
    assert "ECE before calibration" not in render_model_card(card)  # no map recorded: no claim

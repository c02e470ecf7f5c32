"""The synthetic customer generator: schema, determinism, churn mechanics and drift scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import churnops
from churnops.core.spec import parse_spec
from churnops.core.synthetic import (
    CATEGORIES,
    DRIFT_SCENARIOS,
    churn_probability,
    generate_customers,
    oracle_auc,
)

pytestmark = pytest.mark.unit

ROWS = 20_000
SEED = 42
SPEC_PATH = Path(churnops.__file__).parent / "specs" / "synthetic.yaml"


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_customers(ROWS, SEED)


def test_columns_are_the_spec_columns_plus_the_true_probability(clean: pd.DataFrame) -> None:
    spec = parse_spec(SPEC_PATH.read_text(), source=str(SPEC_PATH))
    assert list(clean.columns) == [*spec.columns, "true_churn_probability"]
    assert set(CATEGORIES) == set(spec.features.categorical)
    assert len(clean) == ROWS


def test_same_seed_gives_the_same_frame(clean: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_customers(ROWS, SEED), clean)


def test_different_seeds_give_different_customers(clean: pd.DataFrame) -> None:
    other = generate_customers(ROWS, SEED + 1)
    assert not other["monthly_charges"].equals(clean["monthly_charges"])
    assert not other["churn"].equals(clean["churn"])


def test_churn_rate_is_realistic(clean: pd.DataFrame) -> None:
    assert 0.20 <= clean["churn"].eq("Yes").mean() <= 0.30


def test_oracle_auc_is_high_but_not_trivial(clean: pd.DataFrame) -> None:
    assert 0.78 <= oracle_auc(clean) <= 0.90


def test_categories_are_the_reference_values_on_clean_data(clean: pd.DataFrame) -> None:
    for column, allowed in CATEGORIES.items():
        assert set(clean[column].unique()) <= set(allowed), column
    assert set(clean["churn"].unique()) == {"Yes", "No"}


def test_ids_are_unique_and_zero_padded(clean: pd.DataFrame) -> None:
    ids = clean["customer_id"]
    assert ids.is_unique
    assert ids.iloc[0] == "C0000001"
    assert ids.str.len().nunique() == 1


def test_numbers_are_in_their_ranges(clean: pd.DataFrame) -> None:
    assert clean["age"].between(18, 85).all()
    assert clean["tenure_months"].between(0, 72).all()
    assert (clean["tenure_months"] == 0).any()
    assert (clean["monthly_charges"] > 0).all()
    assert (clean["support_calls"] >= 0).all()
    assert clean["num_services"].between(1, 5).all()
    probability = clean["true_churn_probability"]
    assert ((probability > 0) & (probability < 1)).all()
    assert 0.0005 < clean["total_charges"].isna().mean() < 0.01


def test_total_charges_follow_tenure_times_monthly(clean: pd.DataFrame) -> None:
    billed = clean.dropna(subset=["total_charges"])
    long = billed[billed["tenure_months"] > 0]
    ratio = long["total_charges"] / (long["tenure_months"] * long["monthly_charges"])
    assert ratio.between(0.8, 1.2).all()
    new = billed[billed["tenure_months"] == 0]
    assert ((new["total_charges"] == 0) | (new["total_charges"] == new["monthly_charges"])).all()


def test_customers_without_internet_have_no_add_ons(clean: pd.DataFrame) -> None:
    offline = clean[clean["internet_service"] == "No"]
    for column in ("tech_support", "online_security", "streaming"):
        assert (offline[column] == "No").all(), column


def test_longer_contracts_mean_longer_tenure_and_less_churn(clean: pd.DataFrame) -> None:
    by_contract = clean.groupby("contract")
    tenure = by_contract["tenure_months"].mean()
    churn = by_contract["churn"].apply(lambda labels: labels.eq("Yes").mean())
    assert tenure["Month-to-month"] < tenure["One year"] < tenure["Two year"]
    assert churn["Month-to-month"] > churn["One year"] > churn["Two year"]


@pytest.mark.parametrize("drift", [None, *DRIFT_SCENARIOS])
def test_true_probability_is_a_function_of_the_observed_columns(drift: str | None) -> None:
    frame = generate_customers(5_000, SEED, drift)
    observed = frame.drop(columns=["churn", "true_churn_probability"])
    np.testing.assert_allclose(churn_probability(observed), frame["true_churn_probability"])


def test_price_increase_raises_fiber_charges_and_churn(clean: pd.DataFrame) -> None:
    drifted = generate_customers(ROWS, SEED, "price_increase")
    fiber = clean["internet_service"] == "Fiber optic"
    increase = drifted["monthly_charges"][fiber] / clean["monthly_charges"][fiber]
    assert increase.between(1.145, 1.255).all()
    pd.testing.assert_series_equal(drifted["monthly_charges"][~fiber], clean["monthly_charges"][~fiber])
    totals = (drifted["total_charges"] / clean["total_charges"])[fiber].dropna()
    assert totals.between(1.14, 1.26).all()
    before = clean["true_churn_probability"][fiber]
    assert (drifted["true_churn_probability"][fiber] > before).all()
    assert drifted["churn"].eq("Yes").mean() > clean["churn"].eq("Yes").mean()


def test_encoding_change_recodes_month_to_month_only(clean: pd.DataFrame) -> None:
    drifted = generate_customers(ROWS, SEED, "encoding_change")
    assert "M2M" in set(drifted["contract"])
    assert "Month-to-month" not in set(drifted["contract"])
    recoded = clean["contract"].replace({"Month-to-month": "M2M"})
    pd.testing.assert_series_equal(drifted["contract"], recoded)
    # A silent upstream change: the customers and their risk are the same.
    pd.testing.assert_frame_equal(drifted.drop(columns="contract"), clean.drop(columns="contract"))


def test_new_segment_adds_an_offshore_region_that_churns_more() -> None:
    drifted = generate_customers(ROWS, SEED, "new_segment")
    offshore = drifted["region"] == "Offshore"
    assert "Offshore" not in CATEGORIES["region"]
    assert 0.07 <= offshore.mean() <= 0.09
    churned = drifted["churn"].eq("Yes")
    assert churned[offshore].mean() > churned[~offshore].mean() + 0.05


def test_a_single_row_is_enough() -> None:
    frame = generate_customers(1, 0)
    assert len(frame) == 1
    assert frame["customer_id"].iloc[0] == "C0000001"


@pytest.mark.parametrize(
    ("rows", "seed", "drift", "message"),
    [
        (0, 1, None, "rows must be at least 1"),
        (-5, 1, None, "rows must be at least 1"),
        (10, -1, None, "seed must be a non-negative"),
        (10, 1, "tariff_war", "price_increase, encoding_change, new_segment"),
    ],
)
def test_bad_arguments_raise_value_error(rows: int, seed: int, drift: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_customers(rows, seed, drift)


def test_churn_probability_refuses_unknown_categories(clean: pd.DataFrame) -> None:
    changed = clean.head(10).assign(region="Atlantis")
    with pytest.raises(ValueError, match="region"):
        churn_probability(changed)


@pytest.mark.slow
def test_lightgbm_learns_close_to_the_oracle() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    frame = generate_customers(130_000, 3)
    features = frame.drop(columns=["customer_id", "churn", "true_churn_probability"])
    features = features.astype(dict.fromkeys(CATEGORIES, "category"))
    labels = frame["churn"].eq("Yes").to_numpy()
    train, holdout = slice(0, 100_000), slice(100_000, None)
    model = lightgbm.LGBMClassifier(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=50, n_jobs=1, verbose=-1
    )
    model.fit(features.iloc[train], labels[train])
    model_auc = roc_auc_score(labels[holdout], model.predict_proba(features.iloc[holdout])[:, 1])
    oracle = roc_auc_score(labels[holdout], frame["true_churn_probability"].iloc[holdout])
    assert model_auc >= oracle - 0.02

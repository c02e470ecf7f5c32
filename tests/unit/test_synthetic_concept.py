"""The concept-drift scenario: the same customers, another churn mechanism; older scenarios unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnops.core.synthetic import (
    CONCEPT_DRIFT_SCENARIOS,
    DRIFT_SCENARIOS,
    churn_probability,
    concept_drift_probability,
    generate_customers,
)

pytestmark = pytest.mark.unit

# sha256 of generate_customers(2000, 9, drift).to_csv(index=False), taken before concept_drift existed.
PINNED = {
    None: "ea10e207a5534ebd9c1e90891e16fe5e8c60bcc6659870190fad3aca20113b86",
    "price_increase": "ac17513eab182df40074bf638ba095ce872d44d5147d6d65e7546fee5c0da4d8",
    "encoding_change": "ff48fe8264b3c5c2132947649769edc95e9aadf2c566926ccd1c604db8d6daa7",
    "new_segment": "af63126b94e506eaaa3adbe317d1745db8d655a9289f283d5774b3a71deb2f7c",
}


@pytest.mark.parametrize("drift", [None, *DRIFT_SCENARIOS])
def test_existing_scenarios_are_byte_identical(drift: str | None) -> None:
    text = generate_customers(2_000, 9, drift).to_csv(index=False)
    assert hashlib.sha256(text.encode()).hexdigest() == PINNED[drift]


@pytest.fixture(scope="module")
def pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_customers(30_000, 5), generate_customers(30_000, 5, "concept_drift")


def test_concept_drift_keeps_the_customers(pair: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    clean, drifted = pair
    assert "concept_drift" in CONCEPT_DRIFT_SCENARIOS
    assert "concept_drift" not in DRIFT_SCENARIOS
    observed = [c for c in clean.columns if c not in ("churn", "true_churn_probability")]
    pd.testing.assert_frame_equal(clean[observed], drifted[observed])


def test_concept_drift_changes_the_mechanism_not_the_churn_rate(
    pair: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    clean, drifted = pair
    observed = drifted.drop(columns=["churn", "true_churn_probability"])
    np.testing.assert_allclose(concept_drift_probability(observed), drifted["true_churn_probability"])
    assert not np.allclose(churn_probability(observed), drifted["true_churn_probability"])
    assert drifted["churn"].eq("Yes").mean() == pytest.approx(clean["churn"].eq("Yes").mean(), abs=0.02)
    old_mechanism_auc = roc_auc_score(drifted["churn"].eq("Yes"), clean["true_churn_probability"])
    assert 0.70 < old_mechanism_auc < 0.80  # the old ranking still helps, but much less


def test_unknown_scenarios_list_the_concept_drift_too() -> None:
    with pytest.raises(ValueError, match="new_segment, concept_drift"):
        generate_customers(10, 1, "tariff_war")

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

# sha256 of the CSV of generate_customers(2000, 9, drift), the probability rounded to 9 decimals.
# The exact CSV matched hashes taken before concept_drift existed (on an AVX-512 machine); the
# rounding is there because NumPy's exp differs by one ulp between SIMD levels (on a CPU without
# AVX-512, 90 of 2,000 probabilities differ by 2e-16), and CI machines differ. The pins below
# were checked equal under NPY_DISABLE_CPU_FEATURES for AVX-512 and for AVX2.
PINNED = {
    None: "4cdb105bb22d9b8f74248ea84994525595aaa503c6e2894cf52883cfa0f2a5d2",
    "price_increase": "49e5e3db5466e671068cc7a1d9280a38fb8bb8fbb86c856a8dfebb1c00cbf17b",
    "encoding_change": "e4dd069e96bffb9b4a28b22a50fd284d290daa8ef2e508f08854fa46a5119f89",
    "new_segment": "0cbce489ffd4f817f8ce01a8f04827d2442095f7d1f6a61f34f0f239c6d3e142",
}


@pytest.mark.parametrize("drift", [None, *DRIFT_SCENARIOS])
def test_existing_scenarios_are_byte_identical(drift: str | None) -> None:
    frame = generate_customers(2_000, 9, drift)
    frame["true_churn_probability"] = frame["true_churn_probability"].round(9)
    text = frame.to_csv(index=False)
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

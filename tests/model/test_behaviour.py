"""Behavioural tests of a trained champion (Made-With-ML style): directional and invariance checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.io.registry import MlflowRegistry
from tests.conftest import PipelineRun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scored(pipeline_run: PipelineRun) -> tuple[object, pd.DataFrame]:
    bundle = MlflowRegistry(pipeline_run.settings.tracking_uri, None).load_bundle(
        "churn-synthetic", "champion"
    )
    customers = pd.read_csv(pipeline_run.data).head(400)
    return bundle, customers


def predict(bundle: object, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(bundle.predict_proba(frame))  # type: ignore[attr-defined]


def test_long_contract_lowers_churn(scored: tuple[object, pd.DataFrame]) -> None:
    bundle, customers = scored
    monthly = customers.assign(contract="Month-to-month")
    two_year = customers.assign(contract="Two year")
    assert (predict(bundle, two_year) < predict(bundle, monthly)).mean() > 0.9


def test_more_support_calls_raise_churn(scored: tuple[object, pd.DataFrame]) -> None:
    bundle, customers = scored
    calm, angry = customers.assign(support_calls=0), customers.assign(support_calls=8)
    assert predict(bundle, angry).mean() > predict(bundle, calm).mean()


def test_identifier_does_not_matter(scored: tuple[object, pd.DataFrame]) -> None:
    bundle, customers = scored
    renamed = customers.assign(customer_id=[f"X{i}" for i in range(len(customers))])
    np.testing.assert_array_equal(predict(bundle, renamed), predict(bundle, customers))


def test_unknown_category_and_missing_values_still_score(scored: tuple[object, pd.DataFrame]) -> None:
    bundle, customers = scored
    odd = customers.head(20).assign(region="Atlantis", monthly_charges=np.nan, payment_method=None)
    proba = predict(bundle, odd)
    assert np.all(np.isfinite(proba))
    assert np.all((proba > 0) & (proba < 1))

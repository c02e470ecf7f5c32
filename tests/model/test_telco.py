"""The real IBM Telco data through the whole pipeline with the repository's params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnops.io.datasets import load_params, load_spec
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from tests.conftest import REPO, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_telco_holdout_auc_meets_published_results(tmp_path: Path, telco_csv: Path) -> None:
    """Published 5-fold ROC AUC on this data is 0.841-0.845 (logistic regression)."""
    settings = make_settings(tmp_path / "home")
    params = load_params(REPO / "params.yaml")
    result = run_pipeline(telco_csv, load_spec("telco"), params, settings, Workdir(tmp_path / "w"))
    evaluation = result["evaluate"]
    holdout = evaluation["candidates"][evaluation["chosen"]]["holdout"]
    assert evaluation["holdout_rows"] == 1409  # stratified 20% of 7,043
    assert holdout["roc_auc"] >= 0.84
    assert evaluation["cv"]["folds"] == 5
    assert evaluation["cv"]["mean"] >= 0.83
    assert result["register"]["model_name"] == "churn-telco"

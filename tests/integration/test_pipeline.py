"""The whole pipeline against a real (embedded) MLflow registry and SQLite offline store."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from churnops.core.params import Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec, write_table
from churnops.io.offline_store import SqlOfflineStore
from churnops.io.registry import LISTED_METRICS, MlflowRegistry
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from tests.conftest import PipelineRun, make_settings, mlflow_at

pytestmark = pytest.mark.integration


def registry(run: PipelineRun) -> MlflowRegistry:
    return MlflowRegistry(run.settings.tracking_uri, run.settings.artifact_root)


def test_first_version_is_champion(pipeline_run: PipelineRun) -> None:
    reg = pipeline_run.result["register"]
    assert reg["version"] == "1"
    assert reg["champion"] is True
    assert registry(pipeline_run).alias_version("churn-synthetic", "champion") == "1"


def test_pyfunc_champion_predicts_raw_rows(pipeline_run: PipelineRun) -> None:
    """`mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_dataframe)` returns probabilities."""
    with mlflow_at(pipeline_run.settings.tracking_uri):
        model = mlflow.pyfunc.load_model("models:/churn-synthetic@champion")
    raw = pd.read_csv(pipeline_run.data).head(50)  # raw file rows, extra columns included
    proba = np.asarray(model.predict(raw))
    assert proba.shape == (50,)
    assert np.all((proba > 0) & (proba < 1))
    bundle = registry(pipeline_run).load_bundle("churn-synthetic", "champion")
    np.testing.assert_allclose(proba, bundle.predict_proba(raw))


def test_candidate_runs_carry_lineage_and_metrics(pipeline_run: PipelineRun) -> None:
    client = registry(pipeline_run).client
    experiment = client.get_experiment_by_name("churnops")
    runs = client.search_runs([experiment.experiment_id], "tags.candidate != ''")
    assert sorted(r.data.tags["candidate"] for r in runs) == ["lightgbm", "logreg", "xgboost"]
    meta = pipeline_run.workdir.read_meta()
    for run in runs:
        tags = run.data.tags
        assert tags["dataset.content_hash"] == meta["content_hash"]
        assert tags["dataset.spec"] == "synthetic"
        assert tags["feature_set_version"] == meta["feature_set_version"]
        assert tags["code_version"]
        assert "mlflow.parentRunId" in tags
        assert {"roc_auc", "pr_auc", "log_loss", "brier", "ece", "val_roc_auc"} <= set(run.data.metrics)
    chosen = next(r for r in runs if r.data.tags["chosen"] == "True")
    artifacts = {a.path for a in client.list_artifacts(chosen.info.run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/calibration.png", "evaluation/model_card.md"} <= artifacts


def test_evaluation_outputs(pipeline_run: PipelineRun) -> None:
    out = pipeline_run.workdir.evaluation_dir
    for name in ("roc.png", "pr.png", "calibration.png", "importance.png", "profit.png"):
        assert (out / name).stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    chosen = metrics["chosen"]
    assert 0.5 < metrics["candidates"][chosen]["holdout"]["roc_auc"] <= 1
    assert 0.0 <= metrics["threshold"]["threshold"] <= 1.0
    assert set(metrics["slices"]) == {"contract", "region", "internet_service"}
    assert set(metrics["fairness"]) == {"gender", "age"}
    assert len(metrics["cv"]["roc_auc"]) == 3
    card = (out / "model_card.md").read_text()
    assert "churn-synthetic v1" in card
    assert "Fairness" in card


def test_offline_store_holds_every_customer(pipeline_run: PipelineRun) -> None:
    store = SqlOfflineStore(pipeline_run.settings.offline_store_url)
    version = pipeline_run.workdir.read_meta()["feature_set_version"]
    vectors = store.latest_vectors(version)
    store.close()
    raw = pd.read_csv(pipeline_run.data)
    assert len(vectors) == len(raw)
    first = raw.iloc[0]
    stored = vectors[first["customer_id"]]
    assert set(stored) == set(load_spec("synthetic").feature_columns)  # the side column is not stored
    assert stored["contract"] == first["contract"]


def test_models_list_json(pipeline_run: PipelineRun) -> None:
    env = {"CHURNOPS_HOME": str(pipeline_run.settings.home), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "churnops", "models", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    versions = json.loads(out.stdout)
    champion = next(v for v in versions if "champion" in v["aliases"])
    assert champion["name"] == "churn-synthetic"
    assert set(champion) == {
        "name",
        "version",
        "aliases",
        "metrics",
        "threshold",
        "dataset",
        "run_id",
        "status",
    }
    assert champion["status"] == "champion"
    assert set(champion["metrics"]) == set(LISTED_METRICS)
    assert all(isinstance(v, float) for v in champion["metrics"].values())


def test_later_version_is_gated_against_the_champion(
    tmp_path, fast_params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2 trained on label-scrambled data is refused by the discrimination gate and stays challenger;
    `models promote 2` is refused naming the gate, `--force` promotes it (an override on record); v3
    trained on good data beats v2 on rows neither trained on and takes over."""
    settings = make_settings(tmp_path / "home")
    spec = load_spec("synthetic")
    good = write_table(generate_customers(3000, seed=1), tmp_path / "good.csv")
    run_pipeline(good, spec, fast_params, settings, Workdir(tmp_path / "w1"))
    # Labels scrambled for most rows: a much weaker model on the same schema (other customers).
    noisy = generate_customers(3000, seed=2)
    noisy["customer_id"] = "N" + noisy["customer_id"]
    flip = np.random.default_rng(0).random(len(noisy)) < 0.45
    noisy.loc[flip, "churn"] = np.where(noisy.loc[flip, "churn"] == "Yes", "No", "Yes")
    second = run_pipeline(
        write_table(noisy, tmp_path / "noisy.csv"), spec, fast_params, settings, Workdir(tmp_path / "w2")
    )["register"]
    assert second["version"] == "2"
    assert second["champion"] is False
    assert second["status"] == "rejected"
    assert second["reason"].startswith("v2 refused: gate discrimination failed")
    reg = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert reg.alias_version("churn-synthetic", "champion") == "1"
    assert reg.alias_version("churn-synthetic", "challenger") == "2"

    monkeypatch.setenv("CHURNOPS_HOME", str(settings.home))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "churnops", *args]
        return subprocess.run(cmd, capture_output=True, check=False, text=True, timeout=120)

    refused = cli("models", "promote", "2")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: v2 refused: gate discrimination failed: AUC ")
    assert reg.alias_version("churn-synthetic", "champion") == "1"
    forced = cli("models", "promote", "2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "forced" in forced.stdout
    assert reg.alias_version("churn-synthetic", "champion") == "2"
    assert reg.alias_version("churn-synthetic", "challenger") is None

    better = generate_customers(3000, seed=3)
    better["customer_id"] = "M" + better["customer_id"]
    third = run_pipeline(
        write_table(better, tmp_path / "better.csv"), spec, fast_params, settings, Workdir(tmp_path / "w3")
    )["register"]
    assert third["champion"] is True, third["reason"]
    assert "all 8 gates passed against champion v2" in third["reason"]
    assert reg.alias_version("churn-synthetic", "champion") == "3"


def test_promote_unknown_version_is_a_clear_error(pipeline_run: PipelineRun) -> None:
    env = {"CHURNOPS_HOME": str(pipeline_run.settings.home), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "churnops", "models", "promote", "99"],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert out.stderr.strip() == "error: churn-synthetic has no version '99'"

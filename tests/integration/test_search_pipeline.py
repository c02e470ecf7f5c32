"""The pipeline with the hyperparameter search and calibration, against a real embedded MLflow:
a tiny budget ends on time and still registers; trials are child runs; the next run warm-starts
from the champion; a calibrated champion serves and batch-scores exactly as its pyfunc predicts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from churnops.core.params import Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec, write_table
from churnops.io.registry import MlflowRegistry
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.score import load_scoring_model, score_file
from churnops.jobs.train import load_trials
from churnops.jobs.workdir import Workdir
from churnops.serving.slots import build_slot
from churnops.settings import Settings
from tests.conftest import FAST_TRAINING, make_settings, mlflow_at
from tests.integration.test_bad_input import assert_clean_failure, run_cli

pytestmark = pytest.mark.integration

LOGREG = {"name": "logreg", "kind": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}}


def _params(training: dict[str, Any]) -> Params:
    return Params.model_validate({"training": training, "evaluation": {"cv_folds": 0}})


def _run(
    root: Path, params: Params, rows: int = 3000, seed: int = 11
) -> tuple[dict[str, Any], Settings, Path]:
    data = root / f"customers-{rows}-{seed}.csv"
    if not data.exists():
        write_table(generate_customers(rows, seed=seed), data)
    settings = make_settings(root / "home")
    result = run_pipeline(data, load_spec("synthetic"), params, settings, Workdir(settings.home / "pipeline"))
    return result, settings, data


def _client(settings: Settings) -> Any:
    return MlflowRegistry(settings.tracking_uri, settings.artifact_root).client


def test_a_tiny_budget_stops_on_time_and_still_registers(tmp_path: Path) -> None:
    budget = 2.0
    params = _params(FAST_TRAINING | {"search": {"enabled": True, "budget_seconds": budget}})
    started = time.perf_counter()
    result, settings, _ = _run(tmp_path, params)
    training = result["train"]
    assert training["search"]["enabled"] is True
    assert training["search"]["seconds"] <= budget + 1.0
    assert time.perf_counter() - started < 60
    assert result["register"]["version"] == "1"
    assert result["register"]["champion"] is True
    families = {name: c["search"] for name, c in training["candidates"].items()}
    assert set(families) == {"logreg", "lightgbm", "xgboost"}
    assert sum(f["seconds"] for f in families.values()) <= budget + 1.0
    assert all(f["trials"] >= 1 for f in families.values())

    # The chosen model is never worse on validation than the best default candidate.
    metric = training["selection_metric"]
    best_default = max(c["default_validation"][metric] for c in training["candidates"].values())
    assert training["candidates"][training["chosen"]]["validation"][metric] >= best_default

    # Every trial is a child run of its candidate's run: parameters and CV score, no artifacts.
    client = _client(settings)
    experiment = client.get_experiment_by_name("churnops").experiment_id
    trials = load_trials(Workdir(settings.home / "pipeline"))
    assert set(trials) == set(families)
    for name, records in trials.items():
        runs = client.search_runs([experiment], f"tags.candidate = '{name}'")
        candidate_run = next(r for r in runs if "trial" not in r.data.tags)
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == candidate_run.info.run_id]
        assert len(children) == len(records) == len(runs) - 1, name
        by_number = {int(r.data.tags["trial"]): r for r in children}
        for record in records:
            run = by_number[record["number"]]
            assert run.data.tags["trial.state"] == record["state"]
            assert run.data.tags["trial.source"] == record["source"]
            assert {k.removeprefix("model.") for k in run.data.params} == set(record["params"])
            if record["state"] == "complete":
                assert run.info.status == "FINISHED"
                assert run.data.metrics["cv_score"] == pytest.approx(record["value"])
            assert not client.list_artifacts(run.info.run_id)
        assert records[0]["source"] == "default"


def test_the_next_run_warm_starts_from_the_champion(tmp_path: Path) -> None:
    champion_logreg = LOGREG | {"params": {"C": 0.05, "max_iter": 500}}
    first, settings, _ = _run(
        tmp_path, _params({"candidates": [champion_logreg], "search": {"enabled": False}})
    )
    assert first["register"]["champion"] is True
    logged = (
        _client(settings)
        .get_run(_client(settings).get_model_version("churn-synthetic", "1").run_id)
        .data.params
    )
    assert logged["model.C"] == "0.05"
    assert logged["params_source"] == "default"

    again = {"candidates": [LOGREG], "search": {"enabled": True, "budget_seconds": 3.0, "patience": 5}}
    second, _, _ = _run(tmp_path, _params(again))
    assert second["train"]["search"]["warm_start"] == ["logistic_regression"]
    records = load_trials(Workdir(settings.home / "pipeline"))["logreg"]
    assert [(r["source"], r["params"]) for r in records[:2]] == [
        ("default", {"C": 1.0}),
        ("champion", {"C": 0.05}),
    ]


def test_a_calibrated_champion_serves_and_scores_as_its_pyfunc(tmp_path: Path) -> None:
    """Class weights skew a logistic regression's probabilities: evaluation picks a calibration map,
    and the served (FastModel), batch-scored (cached CompiledModel) and pyfunc probabilities agree."""
    balanced = LOGREG | {"params": {"C": 1.0, "max_iter": 500, "class_weight": "balanced"}}
    result, settings, data = _run(tmp_path, _params({"candidates": [balanced], "search": {"enabled": False}}))
    calibrator = result["evaluate"]["calibrator"]
    assert calibrator["method"] in ("platt", "isotonic")
    assert calibrator["ece_after"] < calibrator["ece_before"] / 2
    metrics = json.loads((settings.home / "pipeline" / "evaluation" / "metrics.json").read_text())
    assert metrics["calibrator"] == calibrator
    card = (settings.home / "pipeline" / "evaluation" / "model_card.md").read_text()
    assert "ECE before calibration" in card

    with mlflow_at(settings.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model("models:/churn-synthetic@champion")
    raw = pd.read_csv(data).head(400)
    expected = np.asarray(pyfunc.predict(raw))

    model = load_scoring_model(settings, None, "champion")  # from the compiled-model cache
    assert model.compiled.fast.calibration.method == calibrator["method"]
    out = tmp_path / "scored.parquet"
    score_file(model, write_table(raw, tmp_path / "rows.parquet"), out)
    np.testing.assert_allclose(pd.read_parquet(out)["churn_probability"], expected, rtol=1e-9, atol=1e-12)

    bundle = MlflowRegistry(settings.tracking_uri, settings.artifact_root).load_bundle(
        "churn-synthetic", "champion"
    )
    slot = build_slot("churn-synthetic", "1", "champion", bundle)  # verifies the golden requests
    features = raw[bundle.spec.feature_columns].to_dict(orient="records")
    served = [slot.score(record)[0] for record in features[:50]]
    np.testing.assert_allclose(served, expected[:50], rtol=1e-9, atol=1e-12)


def test_a_bad_search_space_fails_before_anything_runs(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "training:\n  search:\n    spaces:\n      lightgbm:\n        num_leaves: {low: 64, high: 8}\n"
    )
    data = write_table(generate_customers(300, seed=1), tmp_path / "d.csv")
    home = tmp_path / "home"
    out = run_cli(home, "pipeline", "run", "--data", str(data), "--params", str(params))
    assert_clean_failure(out, home, "training.search.spaces.lightgbm.num_leaves", "empty range")
    assert not (home / "runs").exists()  # not even ingested


def test_search_off_on_the_command_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "training:\n  candidates:\n    - {name: logreg, kind: logistic_regression, params: {max_iter: 300}}\n"
        "  search: {enabled: true, budget_seconds: 300}\nevaluation: {cv_folds: 0}\n"
    )
    data = write_table(generate_customers(600, seed=2), tmp_path / "d.csv")
    home = tmp_path / "home"
    out = run_cli(home, "pipeline", "run", "--data", str(data), "--params", str(params), "--search", "off")
    assert out.returncode == 0, out.stderr
    (run,) = (home / "runs").iterdir()  # each `pipeline run` has a working directory of its own
    training = json.loads((run / "training.json").read_text())
    assert training["search"] == {"enabled": False}
    assert "search" not in training["candidates"]["logreg"]
    assert load_trials(Workdir(run)) == {}


def test_a_blend_champion_registers_serves_and_warm_starts_its_members(tmp_path: Path) -> None:
    """On these 3,000 rows (seed 11) the log-odds blend of logreg and the best tree beats every single
    candidate on validation: it is chosen, cross-validated, registered with its members' parameters,
    served by one compiled kernel as its pyfunc predicts, and the next search starts from its members."""
    params = Params.model_validate(
        {"training": FAST_TRAINING | {"blend": True}, "evaluation": {"cv_folds": 3}}
    )
    result, settings, data = _run(tmp_path, params)
    training = result["train"]
    assert training["chosen"] == "blend"
    entry = training["candidates"]["blend"]
    names = list(entry["blend"]["weights"])
    assert names[0] == "logreg"
    assert names[1] in ("lightgbm", "xgboost")
    assert entry["validation"]["roc_auc"] > max(
        training["candidates"][n]["validation"]["roc_auc"] for n in names
    )
    assert len(result["evaluate"]["cv"]["roc_auc"]) == 3

    logged = (
        _client(settings)
        .get_run(_client(settings).get_model_version("churn-synthetic", "1").run_id)
        .data.params
    )
    assert logged["kind"] == "blend"
    assert logged[f"member.{names[1]}.kind"] == names[1]

    with mlflow_at(settings.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model("models:/churn-synthetic@champion")
    raw = pd.read_csv(data).head(300)
    expected = np.asarray(pyfunc.predict(raw))
    bundle = MlflowRegistry(settings.tracking_uri, settings.artifact_root).load_bundle(
        "churn-synthetic", "champion"
    )
    slot = build_slot("churn-synthetic", "1", "champion", bundle)
    assert slot.fast.kind == "blend"
    served = [slot.score(r)[0] for r in raw[bundle.spec.feature_columns].to_dict(orient="records")]
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-7)  # XGBoost sums in float32

    again = FAST_TRAINING | {"blend": True, "search": {"enabled": True, "budget_seconds": 2.0}}
    second, _, _ = _run(tmp_path, _params(again))
    assert second["train"]["search"]["warm_start"] == sorted(["logistic_regression", names[1]])

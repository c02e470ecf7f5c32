"""`churnops score`: batch scoring from the registry's champion, same fields as the API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.io.registry import MlflowRegistry
from churnops.serving.slots import build_slot
from tests.conftest import PipelineRun, mlflow_at

pytestmark = pytest.mark.integration


def run_score(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    cmd = [sys.executable, "-m", "churnops", "score", *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=clean | env | {"CHURNOPS_HOME": str(home)},
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_file(pipeline_run: PipelineRun, tmp_path: Path, suffix: str) -> None:
    raw = pd.read_csv(pipeline_run.data).head(700)
    source = tmp_path / f"in{suffix}"
    (raw.to_parquet if suffix == ".parquet" else raw.to_csv)(source, index=False)
    out = tmp_path / f"out{suffix}"
    result = run_score(pipeline_run.settings.home, "--data", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    scored = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(scored) == 700
    assert list(scored["customer_id"]) == list(raw["customer_id"])
    expected_columns = {
        "customer_id",
        "churn_probability",
        "churn",
        "threshold",
        "model_name",
        "model_version",
        "model_variant",
        "feature_source",
        "reason_1",
        "reason_1_contribution",
        "reason_2",
        "reason_2_contribution",
        "reason_3",
        "reason_3_contribution",
    }
    assert set(scored.columns) == expected_columns
    bundle = MlflowRegistry(pipeline_run.settings.tracking_uri, None).load_bundle(
        "churn-synthetic", "champion"
    )
    np.testing.assert_allclose(scored["churn_probability"], bundle.predict_proba(raw), rtol=1e-9)
    assert (scored["churn"] == (scored["churn_probability"] >= scored["threshold"])).all()

    # The same reasons as the API gives for the same features.
    slot = build_slot("churn-synthetic", "1", "champion", bundle)
    record = raw.iloc[11][bundle.spec.feature_columns].to_dict()
    _, reasons = slot.score(record)
    row = scored.iloc[11]
    assert [row[f"reason_{i}"] for i in (1, 2, 3)] == [name for name, _ in reasons]
    np.testing.assert_allclose([row[f"reason_{i}_contribution"] for i in (1, 2, 3)], [v for _, v in reasons])


def test_score_errors(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    missing = run_score(pipeline_run.settings.home, "--data", str(tmp_path / "nope.csv"), "--out", "x.csv")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("error: data file not found")
    raw = pd.read_csv(pipeline_run.data).head(5).drop(columns=["contract"])
    raw.to_csv(tmp_path / "short.csv", index=False)
    short = run_score(
        pipeline_run.settings.home, "--data", str(tmp_path / "short.csv"), "--out", str(tmp_path / "o.csv")
    )
    assert short.returncode == 1
    assert "'contract'" in short.stderr
    alias = run_score(
        pipeline_run.settings.home,
        "--data",
        str(tmp_path / "short.csv"),
        "--out",
        "o.csv",
        "--version",
        "nope",
    )
    assert alias.returncode == 1
    assert "no alias 'nope'" in alias.stderr
    named = run_score(
        pipeline_run.settings.home,
        *("--data", str(tmp_path / "short.csv"), "--out", "o.csv"),
        CHURNOPS_MODEL_NAME="churn-other",
    )
    assert named.returncode == 1  # CHURNOPS_MODEL_NAME names the model when --model does not
    assert "no registered model named 'churn-other'" in named.stderr


def _home_copy(pipeline_run: PipelineRun, tmp_path: Path) -> Path:
    """A copy of the pipeline's home (registry, artifacts, cache) that a test may change."""
    home = tmp_path / "home"
    shutil.copytree(pipeline_run.settings.home, home)
    return home


def test_warm_score_never_imports_mlflow(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    """`pipeline run` leaves the champion compiled in the cache; scoring then reads the registry
    without MLflow (its import alone costs seconds per call)."""
    assert list((pipeline_run.settings.home / "cache" / "compiled").glob("churn-synthetic-v1-*.pkl"))
    source = tmp_path / "in.parquet"
    pd.read_csv(pipeline_run.data).head(50).to_parquet(source, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env["CHURNOPS_HOME"] = str(pipeline_run.settings.home)
    cmd = [sys.executable, "-X", "importtime", "-m", "churnops", "score", "--data", str(source)]
    result = subprocess.run(
        [*cmd, "--out", str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time" in line}
    assert "churnops.jobs.score" in imported
    assert not {m for m in imported if m.split(".")[0] in ("mlflow", "lightgbm", "sklearn", "sqlalchemy")}


def test_score_follows_the_alias_and_rebuilds_a_lost_cache(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    home = _home_copy(pipeline_run, tmp_path)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    v1 = client.get_model_version("churn-synthetic", "1")
    with mlflow_at(uri):  # MLflow checks a logged-model source through the process-wide URI
        v2 = client.create_model_version("churn-synthetic", v1.source, run_id=v1.run_id)
    client.set_registered_model_alias("churn-synthetic", "champion", v2.version)
    source = tmp_path / "in.csv"
    pd.read_csv(pipeline_run.data).head(30).to_csv(source, index=False)

    out = tmp_path / "out.csv"
    result = run_score(home, "--data", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert set(pd.read_csv(out)["model_version"].astype(str)) == {str(v2.version)}
    cached = sorted(p.name.split("-")[2] for p in (home / "cache" / "compiled").glob("*.pkl"))
    assert cached == ["v1", f"v{v2.version}"]  # the new version was compiled and kept

    shutil.rmtree(home / "cache")
    result = run_score(home, "--data", str(source), "--out", str(out), "--version", "1")
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(out)
    assert set(scored["model_version"].astype(str)) == {"1"}
    assert set(scored["model_variant"].astype(str)) == {"1"}
    assert list((home / "cache" / "compiled").glob("churn-synthetic-v1-*.pkl"))


def test_score_keeps_an_earlier_output_when_it_fails(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    raw = pd.read_csv(pipeline_run.data).head(40).drop(columns=["tenure_months"])
    raw.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "out.csv"
    out.write_text("yesterday's scores\n")
    result = run_score(pipeline_run.settings.home, "--data", str(tmp_path / "bad.csv"), "--out", str(out))
    assert result.returncode == 1
    assert "'tenure_months'" in result.stderr.strip().splitlines()[-1]
    assert out.read_text() == "yesterday's scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out.csv"]

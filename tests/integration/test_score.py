"""`churnops score`: batch scoring from the registry's champion, same fields as the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.io.registry import MlflowRegistry
from churnops.serving.slots import build_slot
from tests.conftest import PipelineRun

pytestmark = pytest.mark.integration


def run_score(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env["CHURNOPS_HOME"] = str(home)
    cmd = [sys.executable, "-m", "churnops", "score", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


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

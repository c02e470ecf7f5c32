"""Bad input: one clear line, a non-zero exit, and nothing registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churnops.core.synthetic import generate_customers

pytestmark = pytest.mark.integration

FAST_PARAMS = """
training:
  candidates:
    - {name: logreg, kind: logistic_regression, params: {max_iter: 300}}
  search: {enabled: false}
evaluation: {cv_folds: 0}
"""


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env["CHURNOPS_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "churnops", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def assert_clean_failure(out: subprocess.CompletedProcess[str], home: Path, *needles: str) -> None:
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    # Nothing half-registered: no MLflow store, or one with no model versions.
    assert not (home / "mlartifacts").exists() or not any((home / "mlartifacts").rglob("bundle.pkl"))


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(FAST_PARAMS)
    return path


@pytest.fixture
def clean(tmp_path: Path) -> pd.DataFrame:
    return generate_customers(600, seed=3)


def pipeline(
    home: Path, data: Path, params: Path, spec: str = "synthetic"
) -> subprocess.CompletedProcess[str]:
    return run_cli(home, "pipeline", "run", "--data", str(data), "--spec", spec, "--params", str(params))


def test_missing_file(tmp_path: Path, params_file: Path) -> None:
    out = pipeline(tmp_path / "home", tmp_path / "nope.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "data file not found", "nope.csv")


def test_empty_file(tmp_path: Path, params_file: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    out = pipeline(tmp_path / "home", tmp_path / "empty.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "empty")


def test_header_only_file(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean.head(0).to_csv(tmp_path / "header.csv", index=False)
    out = pipeline(tmp_path / "home", tmp_path / "header.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "empty")


def test_missing_column(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean.drop(columns=["contract"]).to_csv(tmp_path / "d.csv", index=False)
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "'contract'", "missing")


def test_spec_names_a_column_the_data_lacks(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean.to_csv(tmp_path / "d.csv", index=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: mine\nid_column: customer_id\ntarget: {column: churn, positive: 'Yes'}\n"
        "features: {numerical: [age, loyalty_points], categorical: [contract]}\n"
    )
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file, spec=str(spec))
    assert_clean_failure(out, tmp_path / "home", "'loyalty_points'", "spec 'mine'")


def test_wrong_type(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean["tenure_months"] = clean["tenure_months"].astype(object)
    clean.loc[:5, "tenure_months"] = "twelve"
    clean.to_csv(tmp_path / "d.csv", index=False)
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "'tenure_months'", "numeric")


def test_one_class_target(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean["churn"] = "No"
    clean.to_csv(tmp_path / "d.csv", index=False)
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file)
    assert_clean_failure(out, tmp_path / "home", "'churn'", "2 distinct values")


def test_encoding_change_drift_fails_validation(tmp_path: Path, params_file: Path) -> None:
    data = tmp_path / "drift.csv"
    made = run_cli(
        tmp_path / "home",
        "data",
        "generate",
        "--rows",
        "800",
        "--out",
        str(data),
        "--drift",
        "encoding_change",
    )
    assert made.returncode == 0, made.stderr
    out = pipeline(tmp_path / "home", data, params_file)
    assert_clean_failure(out, tmp_path / "home", "'contract'", "reference categories", "M2M")
    # Each `pipeline run` has a working directory of its own under $CHURNOPS_HOME/runs.
    (run,) = (tmp_path / "home" / "runs").iterdir()
    assert (run / "validation" / "validation.html").is_file()
    assert (run / "validation" / "validation.json").is_file()
    assert str(run / "validation" / "validation.html") in out.stderr


def test_bad_spec_file(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    clean.to_csv(tmp_path / "d.csv", index=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: mine\nid_column: customer_id\nfeatures: {numerical: [age]}\n")
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file, spec=str(spec))
    assert_clean_failure(out, tmp_path / "home", "target")


def test_clean_data_passes_and_registers(tmp_path: Path, params_file: Path, clean: pd.DataFrame) -> None:
    """The control case: the same command on clean data registers a champion."""
    clean.to_csv(tmp_path / "d.csv", index=False)
    out = pipeline(tmp_path / "home", tmp_path / "d.csv", params_file)
    assert out.returncode == 0, out.stderr
    assert "registered churn-synthetic v1" in out.stderr


def test_parquet_with_numeric_target_and_own_spec(
    tmp_path: Path, params_file: Path, clean: pd.DataFrame
) -> None:
    """Any Parquet file with a correct spec runs end to end; the positive class may be a number."""
    own = clean.rename(columns={"customer_id": "account", "churn": "left"}).assign(
        left=lambda f: (f["left"] == "Yes").astype(int), nickname="secret-pii-value"
    )
    own.to_parquet(tmp_path / "accounts.parquet", index=False)
    spec = tmp_path / "accounts.yaml"
    spec.write_text(
        "name: accounts\nid_column: account\ntarget: {column: left, positive: 1}\n"
        "features: {numerical: [age, tenure_months, monthly_charges], categorical: [contract, gender]}\n"
        "pii: [gender]\nslices: [contract]\n"
    )
    out = pipeline(tmp_path / "home", tmp_path / "accounts.parquet", params_file, spec=str(spec))
    assert out.returncode == 0, out.stderr
    assert "registered churn-accounts v1" in out.stderr
    # Columns the spec does not name are dropped at ingestion and never stored or logged.
    stored = [
        p
        for p in (tmp_path / "home").rglob("*")
        if p.is_file() and p.suffix in {".db", ".json", ".md", ".parquet"}
    ]
    assert stored
    for path in stored:
        assert b"secret-pii-value" not in path.read_bytes(), path


def test_serve_with_nothing_registered(tmp_path: Path) -> None:
    """Before any pipeline run, `serve` says what to do instead of a uvicorn start-up traceback."""
    out = run_cli(tmp_path / "home", "serve", "--port", "9")
    assert_clean_failure(out, tmp_path / "home", "no registered model yet", "churnops pipeline run")

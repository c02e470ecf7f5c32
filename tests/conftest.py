"""Shared fixtures: an isolated CHURNOPS_HOME per test, small synthetic data, the telco file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnops.core.params import Params
from churnops.core.spec import DatasetSpec
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec, write_table
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# The shared data directory sits beside the checkout (or beside the worktrees' directory).
TELCO_CSV = next(
    (
        p / "shared/data/telco_churn.csv"
        for p in REPO.parents
        if (p / "shared/data/telco_churn.csv").is_file()
    ),
    REPO.parent / "shared" / "data" / "telco_churn.csv",
)

# Quick candidates for tests: the same kinds as params.yaml, fewer rounds.
FAST_TRAINING = {
    "candidates": [
        {"name": "logreg", "kind": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}},
        {
            "name": "lightgbm",
            "kind": "lightgbm",
            "params": {"n_estimators": 200, "learning_rate": 0.1, "num_leaves": 15, "num_threads": 1},
            "early_stopping_rounds": 20,
        },
        {
            "name": "xgboost",
            "kind": "xgboost",
            "params": {"n_estimators": 200, "learning_rate": 0.1, "max_depth": 4, "nthread": 1},
            "early_stopping_rounds": 20,
        },
    ],
    "budget_seconds": 120,
    "search": {"enabled": False},  # tests about the search or the blend switch them on themselves
    "blend": False,
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway CHURNOPS_HOME (embedded SQLite stores and MLflow) for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("CHURNOPS_HOME", str(path))
    for name in ("MLFLOW_TRACKING_URI", "DATABASE_URL", "REDIS_URL", "CHURNOPS_MODEL_NAME", "POSTGRES_HOST"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture(scope="session")
def synthetic_spec() -> DatasetSpec:
    return load_spec("synthetic")


@pytest.fixture(scope="session")
def telco_spec() -> DatasetSpec:
    return load_spec("telco")


@pytest.fixture(scope="session")
def fast_params() -> Params:
    return Params.model_validate({"training": FAST_TRAINING, "evaluation": {"cv_folds": 3}})


@pytest.fixture(scope="session")
def synthetic_frame() -> pd.DataFrame:
    from churnops.core.synthetic import generate_customers

    return generate_customers(4000, seed=7)


@pytest.fixture(scope="session")
def telco_csv() -> Iterator[Path]:
    if not TELCO_CSV.is_file():
        pytest.skip(f"{TELCO_CSV} not available")
    return TELCO_CSV


@dataclass(frozen=True)
class PipelineRun:
    settings: Settings
    workdir: Workdir
    data: Path
    result: dict[str, Any]


def make_settings(home: Path) -> Settings:
    return Settings(churnops_home=home, mlflow_tracking_uri=None, database_url=None, model_name=None)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, fast_params: Params) -> PipelineRun:
    """One full pipeline on 4,000 synthetic rows with quick candidates, in its own CHURNOPS_HOME."""
    root = tmp_path_factory.mktemp("pipeline")
    data = write_table(generate_customers(4000, seed=11), root / "customers.csv")
    settings = make_settings(root / "home")
    workdir = Workdir(settings.home / "pipeline")
    result = run_pipeline(data, load_spec("synthetic"), fast_params, settings, workdir)
    return PipelineRun(settings, workdir, data, result)


@contextmanager
def mlflow_at(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `uri` for a block, then restore them
    (MLflow also writes them to os.environ, which Settings read)."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous = registry_utils._registry_uri
    previous_env = os.environ.get("MLFLOW_REGISTRY_URI")
    with _use_tracking_uri(uri):
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            registry_utils._registry_uri = previous
            if previous_env is None:
                os.environ.pop("MLFLOW_REGISTRY_URI", None)
            else:
                os.environ["MLFLOW_REGISTRY_URI"] = previous_env


def service_state(asgi_app: Any) -> Any:
    """The ServiceState of a served ASGI stack: walk the wrapping layers down to FastAPI."""
    layer = asgi_app
    for _ in range(10):
        state = getattr(getattr(layer, "state", None), "service", None)
        if state is not None:
            return state
        layer = getattr(layer, "app", None)
    raise AssertionError("no ServiceState under this ASGI stack (is the lifespan running?)")


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a CHURNOPS_HOME (registry, offline store, secrets) whose ledger starts empty, so a
    test counts only its own records whatever ran before it on the source."""
    import shutil
    import sqlite3

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("spool", "metrics"))
    db = sqlite3.connect(target / "features.db", isolation_level=None)
    try:
        triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in triggers:
            db.execute(f"DROP TRIGGER {name}")
        for table in ("ledger_records", "ledger_checkpoints", "feedback_labels", "customer_keys",
                      "privacy_state", "change_log"):  # fmt: skip
            db.execute(f"DELETE FROM {table}")
        for _, sql in triggers:
            db.execute(sql)
    finally:
        db.close()
    return target

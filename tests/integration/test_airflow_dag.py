"""dags/churnops_lifecycle.py under Airflow 3.3 (its own virtualenv, `make airflow`), run with
`dag.test()`: one task per step, each calling the churnops CLI; new data retrains, gates and
records the cycle; with nothing new the run skips after `plan`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from churnops.io.datasets import write_table
from tests.conftest import REPO, make_settings
from tests.lifecycle_helpers import customers, history, train, write_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
CHURNOPS_BIN = REPO / ".venv" / "bin" / "churnops"
STEPS = ["bake", "plan", "ingest", "validate", "featurize", "train", "evaluate", "register", "record"]


def dag_test(project: Path, home: Path, airflow_home: Path) -> dict:
    if not AIRFLOW_PYTHON.is_file():
        pytest.fail(f"{AIRFLOW_PYTHON} is missing: run `make airflow` (Airflow has a virtualenv of its own)")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_", "AIRFLOW"))
    }
    env |= {
        "AIRFLOW_HOME": str(airflow_home),
        "CHURNOPS_HOME": str(home),
        "CHURNOPS_BIN": str(CHURNOPS_BIN),
        "CHURNOPS_PROJECT_DIR": str(project),
    }
    out = subprocess.run(
        [str(AIRFLOW_PYTHON), str(REPO / "tests" / "airflow" / "run_dag.py")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_dag_runs_one_cycle_a_task_per_step(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    train(settings, customers(3000, seed=1, noise=0.2), tmp_path, "v1")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_params(tmp_path / "params.yaml", lifecycle={"new_data": {"glob": "incoming/*.csv", "settle": "0s"}})
    write_table(customers(6000, seed=2, prefix="N"), incoming / "2026-12.csv")

    run = dag_test(tmp_path, settings.home, tmp_path / "airflow")
    assert run["state"] == "success", run
    assert {run["tasks"][step] for step in STEPS} == {"success"}, run["tasks"]
    events = history(settings.home)
    assert events[0]["action"] == "models.register"
    assert events[0]["to"] == "2"
    assert events[0]["outcome"] == "champion"
    assert events[0]["trigger"] == "lifecycle:new_data"

    quiet = dag_test(tmp_path, settings.home, tmp_path / "airflow")  # the file was trained on already
    assert quiet["tasks"]["bake"] == "success"
    assert {quiet["tasks"][step] for step in STEPS[1:-1]} == {"skipped"}, quiet["tasks"]
    assert len(history(settings.home)) == len(events)

"""The lifecycle loop's trial: a retrained candidate that passed its gates meets live traffic (an A/B
experiment, or a shadow) before it may replace the champion; a trial that holds promotes it, a
breach rejects it; the experiment ends either way and `models history` shows why."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.io.datasets import write_table
from churnops.io.experiment_store import ExperimentStore
from churnops.io.lifecycle_store import served_predictions
from churnops.io.registry import MlflowRegistry
from churnops.io.sql_store import SqlStore
from churnops.jobs.lifecycle import run_cycle
from churnops.jobs.promote import open_lifecycle, promote
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import make_settings
from tests.lifecycle_helpers import cli, customers, history, quick_params, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "churn-synthetic"


def trial_params(incoming: Path, mode: str, max_psi: float, deadline: str = "24h") -> object:
    trial = {"mode": mode, "duration": "1s", "share": 0.5, "min_predictions": 60, "deadline": deadline}
    lifecycle = {
        "new_data": {"glob": str(incoming / "*.csv"), "settle": "0s"},
        "service_url": "http://127.0.0.1:9",  # no service metrics here: the ledger's figures decide
        "trial": trial,
        "bake": {"duration": "0s", "max_prediction_psi": max_psi},
    }
    return quick_params(lifecycle=lifecycle)


def start(
    tmp_path: Path, mode: str, max_psi: float, deadline: str = "24h"
) -> tuple[Settings, object, list[str]]:
    """v1 champion; a new file; the cycle registers v2 `in_trial` and starts its experiment."""
    settings = make_settings(tmp_path / "home")
    first = train(settings, customers(3000, seed=1, noise=0.2), tmp_path, "v1")  # a weak first model
    assert first["status"] == "champion", first["reason"]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    params = trial_params(incoming, mode, max_psi, deadline)
    write_table(customers(6000, seed=2, prefix="N"), incoming / "2026-12.csv")
    started = run_cycle(settings, params, principal="test")
    assert started.outcome == "trial_started", started.reasons
    assert started.version == "2"
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "1"  # nothing moved yet
    assert registry.alias_version(MODEL, "challenger") == "2"
    assert statuses(settings)["2"] == "in_trial"
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    assert (status["trial"]["version"], status["trial"]["mode"]) == ("2", mode)
    # No traffic yet: the trial goes on, and nothing is retrained meanwhile.
    waiting = run_cycle(settings, params, principal="test")
    assert waiting.outcome == "trialling", waiting.reasons
    ids = pd.read_csv(tmp_path / "v1.csv")["customer_id"].head(240).tolist()
    return settings, params, ids


def serve(settings: Settings, ids: list[str]) -> Counter[str]:
    """Answer every id once; the versions that answered."""
    served = Settings(churnops_home=settings.home, CHURNOPS_AUDIT_DURABILITY="sync")
    with TestClient(serving_app(served), headers=all_scopes(served)) as client:
        answers = [client.post("/v1/predict", json={"customer_id": c}) for c in ids]
        time.sleep(1.0)  # shadows are scored after their responses
    assert all(a.status_code == 200 for a in answers)
    return Counter(a.json()["model"]["version"] for a in answers)


def statuses(settings: Settings) -> dict[str, str]:
    listed = json.loads(cli(settings.home, "models", "list", "--json").stdout)
    return {v["version"]: v["status"] for v in listed}


def experiment_of(settings: Settings, name: str) -> str:
    store = SqlStore(settings.sql_store_url)
    try:
        return ExperimentStore(store).get(name).status
    finally:
        store.close()


def test_an_experiment_trial_that_holds_promotes_the_candidate(tmp_path: Path) -> None:
    settings, params, ids = start(tmp_path, "experiment", max_psi=5.0)
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    experiment = status["trial"]["experiment"]
    versions = serve(settings, ids)
    assert min(versions["1"], versions["2"]) >= 60, versions  # each customer's arm, about half each
    time.sleep(1.0)  # the trial's duration
    done = run_cycle(settings, params, principal="test")
    assert done.outcome == "promoted", done.reasons
    assert done.version == "2"
    assert done.reasons[0].startswith("trial passed: "), done.reasons
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "2"
    assert experiment_of(settings, experiment) == "stopped"  # serving is back on the aliases
    events = history(settings.home)
    assert (events[0]["action"], events[0]["from"], events[0]["to"]) == ("models.promote", "1", "2")
    assert events[0]["trigger"] == f"lifecycle:trial:{experiment}"
    assert "trial passed" in events[0]["reason"]
    assert (events[1]["action"], events[1]["outcome"]) == ("models.trial", "in_trial")
    assert events[1]["principal"] == "test"


def test_a_shadow_trial_that_breaches_rejects_the_candidate(tmp_path: Path) -> None:
    # A prediction-drift bound no real traffic meets: the trial must reject on the candidate's own scores.
    settings, params, ids = start(tmp_path, "shadow", max_psi=1e-6)
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    experiment = status["trial"]["experiment"]
    versions = serve(settings, ids)
    assert set(versions) == {"1"}  # a shadow is never the answer
    sql = SqlStore(settings.sql_store_url)
    try:
        shadows = served_predictions(sql, MODEL, "2", 0, shadow=True)
    finally:
        sql.close()
    assert 60 <= len(shadows) < len(ids), len(shadows)  # about half the requests were scored by v2 too
    done = run_cycle(settings, params, principal="test")
    assert done.outcome == "rejected", done.reasons
    assert done.reasons[0].startswith("trial breach: prediction drift PSI"), done.reasons
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "1"
    assert statuses(settings)["2"] == "rejected"
    assert experiment_of(settings, experiment) == "stopped"
    events = history(settings.home)
    shown = (events[0]["action"], events[0]["to"], events[0]["trigger"])
    assert shown == ("models.reject", "2", "lifecycle:trial")
    assert "trial breach" in events[0]["reason"]
    after = run_cycle(settings, params, principal="test")  # the trial is over: the loop is free again
    assert after.outcome == "idle", after.reasons


def test_promoting_the_candidate_by_hand_ends_its_trial_with_the_move(tmp_path: Path) -> None:
    settings, params, ids = start(tmp_path, "experiment", max_psi=5.0)
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    experiment = status["trial"]["experiment"]
    with open_lifecycle(settings, params) as lc:
        move = promote(lc, "2", principal="an operator")
    assert move.outcome == "champion"
    assert experiment_of(settings, experiment) == "stopped"  # with the move, not at the next cycle
    assert set(serve(settings, ids[:40])) == {"2"}  # serving follows the alias again, for everyone
    after = run_cycle(settings, params, principal="test")
    assert after.outcome == "idle", after.reasons
    assert after.reasons[0] == "trial of v2 ended: v2 is champion now"
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    assert status["trial"] is None


def test_a_trial_without_traffic_ends_inconclusive_at_its_deadline(tmp_path: Path) -> None:
    """Before the deadline a trial held the loop for as long as no traffic came."""
    settings, params, _ = start(tmp_path, "experiment", max_psi=5.0, deadline="8s")
    started = time.monotonic()  # the trial started before start() returned
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    experiment = status["trial"]["experiment"]
    assert status["trial"]["deadline_us"] == status["trial"]["started_us"] + 8_000_000
    shown = cli(settings.home, "lifecycle", "status").stdout
    assert "inconclusive without its predictions at 20" in shown, shown  # an ISO time follows
    time.sleep(max(0.0, 8.5 - (time.monotonic() - started)))
    ended = run_cycle(settings, params, principal="test")
    assert ended.outcome == "trial_inconclusive", ended.reasons
    assert ended.reasons[0].startswith("trial inconclusive: 0 predictions over"), ended.reasons
    assert "fewer than the 60 it needs, by its deadline (8s)" in ended.reasons[0]
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "1"
    assert statuses(settings)["2"] == "candidate"  # not rejected: a person may still promote it
    assert experiment_of(settings, experiment) == "stopped"
    events = history(settings.home)
    assert (events[0]["action"], events[0]["outcome"]) == ("models.trial", "candidate")
    assert "not judged: trial inconclusive" in events[0]["reason"]
    after = run_cycle(settings, params, principal="test")
    assert after.outcome == "idle", after.reasons  # the loop goes on: no trial holds it any more

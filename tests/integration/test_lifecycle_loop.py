"""The lifecycle loop on real stores: a new file retrains in a working directory of its own and the
promotion starts a bake; data that fails validation is recorded as rejected; the ledger's labelled
predictions make a training set point in time, without opted-out customers; one cycle at a time
(two watchers side by side; the lease on PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.io.datasets import load_spec, write_table
from churnops.io.lifecycle_store import CycleLease, lifecycle_events
from churnops.io.offline_store import SqlOfflineStore
from churnops.io.registry import MlflowRegistry
from churnops.io.sql_store import SqlStore
from churnops.jobs.lifecycle import run_cycle
from churnops.jobs.privacy import open_privacy, opt_out_customer
from churnops.jobs.promote import open_lifecycle
from churnops.jobs.retrain_data import ledger_training_data
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import make_settings
from tests.lifecycle_helpers import cli, customers, history, quick_params, train, write_params
from tests.pg import throwaway_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "churn-synthetic"


def loop_params(incoming: Path, settle: str = "0s", **lifecycle: object) -> dict:
    new_data = {"glob": str(incoming / "*.csv"), "settle": settle}
    return {"new_data": new_data, "service_url": "http://127.0.0.1:9", **lifecycle}


def test_new_data_retrains_in_its_own_directory_and_the_promotion_bakes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    first = train(settings, customers(3000, seed=1, noise=0.2), tmp_path, "v1")  # a weak first model
    assert first["status"] == "champion", first["reason"]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    bake = {"duration": "1s", "deadline": "8s"}  # no traffic comes: the bake ends inconclusive
    params = quick_params(lifecycle=loop_params(incoming, bake=bake))
    idle = run_cycle(settings, params, principal="test")
    assert idle.outcome == "idle"

    write_table(customers(6000, seed=2, prefix="N"), incoming / "2026-12.csv")
    result = run_cycle(settings, params, principal="test")
    promoted = time.monotonic()  # the bake started before the cycle returned
    assert result.outcome == "promoted", result.reasons
    assert result.version == "2"
    assert [t["name"] for t in result.triggers] == ["new_data"]
    run_dir = Path(str(result.run_dir))
    assert run_dir.parent == settings.home / "runs"
    assert (run_dir / "registration.json").is_file()
    assert json.loads((run_dir / "plan.json").read_text())["data_info"]["what"] == "2026-12.csv"
    assert not (settings.home / "pipeline").exists()  # no shared directory for two runs to overwrite

    baking = run_cycle(settings, params, principal="test")
    assert baking.outcome == "baking"  # nothing retrained while v2 bakes
    events = history(settings.home)
    assert events[0]["action"] == "models.register"
    assert events[0]["trigger"] == "lifecycle:new_data"
    assert events[0]["to"] == "2"
    status = json.loads(cli(settings.home, "lifecycle", "status", "--json").stdout)
    assert status["champion"] == "2"
    assert status["bake"]["version"] == "2"
    assert status["bake"]["previous"] == "1"
    assert status["bake"]["deadline_us"] == status["bake"]["started_us"] + 8_000_000
    assert status["last_cycle"]["outcome"] == "baking"
    assert str(incoming / "2026-12.csv") in status["data_seen"]["files"]

    time.sleep(max(0.0, 8.5 - (time.monotonic() - promoted)))  # past the bake's deadline
    after = run_cycle(settings, params, principal="test")
    assert after.outcome == "idle", after.reasons  # the bake no longer holds the loop
    assert after.reasons[0].startswith("bake of v2 ended inconclusive: 0 predictions over"), after.reasons
    with open_lifecycle(settings, params) as lc:
        bakes = lifecycle_events(lc.sql, prefixes=("lifecycle.bake",))
    assert bakes[0]["details"]["outcome"] == "bake_inconclusive"
    assert (
        MlflowRegistry(settings.tracking_uri, settings.artifact_root).alias_version(MODEL, "champion") == "2"
    )


def test_data_that_fails_validation_is_recorded_as_rejected_and_not_retried(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    train(settings, customers(3000, seed=1), tmp_path, "v1")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    bad = customers(3000, seed=2, prefix="N")
    bad["tenure_months"] = -bad["tenure_months"] - 500  # far outside anything the champion saw
    write_table(bad, incoming / "broken.csv")
    params = quick_params(lifecycle=loop_params(incoming))
    result = run_cycle(settings, params, principal="test")
    assert result.outcome == "rejected"
    assert result.reasons[0].startswith("validation failed: column 'tenure_months'")
    report = Path(str((result.data or {})["validation_report"]))
    assert report.is_file()
    assert report.parent.parent == Path(str(result.run_dir))
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "1"
    assert len(registry.list_versions(MODEL)) == 1
    with open_lifecycle(settings, params) as lc:
        cycles = lifecycle_events(lc.sql, prefixes=("lifecycle.cycle",))
    assert len(cycles) == 1
    assert cycles[0]["details"]["outcome"] == "rejected"
    assert cycles[0]["details"]["data"]["validation_report"] == str(report)
    assert run_cycle(settings, params, principal="test").outcome == "idle"  # the file is not retried


def test_ledger_training_data_is_point_in_time_and_leaves_opted_out_customers_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    frame = customers(3000, seed=1)
    train(settings, frame, tmp_path, "v1")
    ids = frame["customer_id"].head(60).tolist()
    served = Settings(churnops_home=settings.home, CHURNOPS_AUDIT_DURABILITY="sync")  # labels follow at once
    with TestClient(serving_app(served), headers=all_scopes(served)) as client:
        predictions = [client.post("/v1/predict", json={"customer_id": c}).json() for c in ids]
        labels = [
            {"prediction_id": p["prediction_id"], "churned": i % 3 == 0} for i, p in enumerate(predictions)
        ]
        assert client.post("/v1/feedback/batch", json={"labels": labels}).json()["joined"] == 60
    with open_privacy(settings) as privacy:
        opt_out_customer(privacy, ids[5], "test")
    spec = load_spec("synthetic")
    version = spec.feature_set_version()
    # A later snapshot of customer ids[7]: the training set must use what the prediction saw.
    later = frame[frame["customer_id"] == ids[7]][["customer_id", *spec.feature_columns]].copy()
    before = float(later["monthly_charges"].iloc[0])
    later["monthly_charges"] = before + 1000.0
    offline = SqlOfflineStore(settings.offline_store_url)
    offline.write_features(version, spec.name, later, "customer_id", datetime.now(UTC) + timedelta(days=1))
    offline.close()

    with open_lifecycle(settings, quick_params()) as lc:
        path, summary = ledger_training_data(lc, spec, version, 0, tmp_path / "ledger.parquet")
    data = pd.read_parquet(path)
    assert summary["opted_out_or_erased"] == 1
    assert summary["rows"] == 59
    assert ids[5] not in set(data["customer_id"])
    assert float(data.loc[data["customer_id"] == ids[7], "monthly_charges"].iloc[0]) == before
    wanted = {ids[i]: ("Yes" if i % 3 == 0 else "No") for i in range(60) if i != 5}
    assert dict(zip(data["customer_id"], data["churn"], strict=True)) == wanted
    assert set(spec.feature_columns) <= set(data.columns)


def test_two_watchers_side_by_side_run_one_cycle_at_a_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    first = train(settings, customers(3000, seed=1, noise=0.2), tmp_path, "v1")  # a weak first model
    assert first["status"] == "champion", first["reason"]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    # The file is written while both watch: `settle` keeps them off it until it is complete (without
    # it a watcher could train on half a file: two cycles for one file).
    params = write_params(
        tmp_path / "params.yaml", lifecycle=loop_params(incoming, settle="3s", bake={"duration": "0s"})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env["CHURNOPS_HOME"] = str(settings.home)
    cmd = [sys.executable, "-m", "churnops", "lifecycle", "watch", "--every", "0.5s", "--params", str(params)]
    logs = [tmp_path / f"watch-{i}.log" for i in range(2)]
    watchers = []
    for log in logs:
        with log.open("wb") as out:
            watchers.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        time.sleep(6)  # both watching (idle cycles)
        write_table(customers(6000, seed=2, prefix="N"), incoming / "a.csv")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "cycle promoted" not in "".join(p.read_text() for p in logs):
            time.sleep(0.5)
        time.sleep(3)  # more turns of both
    finally:
        for proc in watchers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in watchers]
    text = [p.read_text() for p in logs]
    assert codes == [0, 0], text
    assert all("stopped after" in t for t in text)
    reports = [line for t in text for line in t.splitlines() if line.startswith("cycle ")]  # one per cycle
    assert sum(line.startswith("cycle promoted (v2)") for line in reports) == 1, text
    assert any(line.startswith("cycle skipped: another cycle holds the file lock") for line in reports), text
    with open_lifecycle(settings, quick_params()) as lc:
        cycles = lifecycle_events(lc.sql, prefixes=("lifecycle.cycle",))
    assert len(cycles) == 1
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert [v["version"] for v in registry.list_versions(MODEL)] == ["2", "1"]


def test_the_lease_is_held_by_one_session_at_a_time_on_postgresql(tmp_path: Path) -> None:
    with throwaway_database() as url:
        first, second = SqlStore(url), SqlStore(url)
        try:
            a, b = CycleLease(first, tmp_path), CycleLease(second, tmp_path)
            assert a.kind == "postgresql advisory lock"
            assert a.acquire()
            assert not b.acquire()
            a.release()
            assert b.acquire()
            assert not a.acquire()
            b.release()
        finally:
            first.close()
            second.close()


def test_the_file_lease_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'features.db'}"
    store = SqlStore(url)
    holder = CycleLease(store, tmp_path)
    assert holder.acquire()
    probe = (
        "import sys; from pathlib import Path; from churnops.io.sql_store import SqlStore; "
        "from churnops.io.lifecycle_store import CycleLease; "
        f"sys.exit(0 if CycleLease(SqlStore({url!r}), Path({str(tmp_path)!r})).acquire() else 3)"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False, timeout=60).returncode == 3
    holder.release()
    assert subprocess.run([sys.executable, "-c", probe], check=False, timeout=60).returncode == 0
    store.close()

"""Delayed labels and GDPR/CCPA requests over HTTP and the CLI, on embedded defaults."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.jobs import audit
from churnops.jobs.feedback import labelled_predictions
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import PipelineRun, copy_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    target = tmp_path_factory.mktemp("privacy") / "home"
    copy_home(pipeline_run.settings.home, target)
    return Settings(churnops_home=target, CHURNOPS_AUDIT_FLUSH_MS=5)


@pytest.fixture(scope="module")
def ids(pipeline_run: PipelineRun) -> list[str]:
    return list(pd.read_csv(pipeline_run.data)["customer_id"].head(60))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as test_client:
        yield test_client


def predict(client: TestClient, customer: str, **extra: object) -> dict:
    response = client.post("/v1/predict", json={"customer_id": customer, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def wait_recorded(settings: Settings, prediction_ids: list[str], timeout: float = 5.0) -> None:
    from churnops.jobs.audit import ledger_store

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger_store(settings) as store:
            if all(store.prediction(p) is not None for p in prediction_ids):
                return
        time.sleep(0.05)
    pytest.fail("predictions not in the ledger within 5 s")


def test_a_label_by_prediction_id_is_idempotent_and_never_overwritten(
    client: TestClient, settings: Settings, ids: list[str]
) -> None:
    answer = predict(client, ids[0])
    wait_recorded(settings, [answer["prediction_id"]])
    label = {"prediction_id": answer["prediction_id"], "churned": True}
    first = client.post("/v1/feedback", json=label)
    assert first.status_code == 200
    assert first.json()["joined"] == 1
    again = client.post("/v1/feedback", json=label)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1
    assert again.json()["joined"] == 0
    conflict = client.post("/v1/feedback", json={**label, "churned": False})
    assert conflict.status_code == 409
    assert "already labelled churned=True" in conflict.json()["error"]["message"]
    frame = labelled_predictions(settings)
    row = frame[frame["prediction_id"] == answer["prediction_id"]].iloc[0]
    assert bool(row["churned"]) is True
    assert row["probability"] == answer["churn_probability"]


def test_bad_labels_are_refused_with_the_field_named(client: TestClient) -> None:
    unknown = client.post(
        "/v1/feedback", json={"prediction_id": "0" * 8 + "-0000-7000-8000-" + "0" * 12, "churned": True}
    )
    assert unknown.status_code == 404
    both = client.post("/v1/feedback", json={"prediction_id": "x" * 36, "customer_id": "C1", "churned": True})
    assert both.status_code == 422
    assert "exactly one" in both.json()["error"]["message"]
    typo = client.post("/v1/feedback", json={"customer_id": "C1", "churned": "maybe"})
    assert typo.status_code == 422
    assert typo.json()["error"]["field"] == "churned"


def test_a_label_by_customer_joins_their_predictions_in_the_window(
    client: TestClient, settings: Settings, ids: list[str]
) -> None:
    answers = [predict(client, ids[1]) for _ in range(3)]
    wait_recorded(settings, [a["prediction_id"] for a in answers])
    response = client.post("/v1/feedback", json={"customer_id": ids[1], "churned": False})
    assert response.json()["joined"] == 3
    old = client.post(
        "/v1/feedback", json={"customer_id": ids[1], "churned": False, "observed_at": "2001-01-01"}
    )
    assert old.status_code == 404  # no prediction in the 60 days before that date


def test_label_file_import_all_or_nothing(
    settings: Settings, client: TestClient, ids: list[str], tmp_path: Path
) -> None:
    answers = [predict(client, c) for c in ids[10:20]]
    wait_recorded(settings, [a["prediction_id"] for a in answers])
    good = tmp_path / "labels.csv"
    pd.DataFrame(
        {"prediction_id": [a["prediction_id"] for a in answers], "churned": ["yes", "no"] * 5}
    ).to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"prediction_id": [answers[0]["prediction_id"], "x"], "churned": ["yes", "perhaps"]}).to_csv(
        bad, index=False
    )
    env = {"CHURNOPS_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}
    refused = _cli(env, "feedback", "import", "--data", str(bad))
    assert refused.returncode == 1
    assert "row 3: churned must be" in refused.stderr
    before = len(labelled_predictions(settings))
    assert before == len(labelled_predictions(settings))  # nothing half-written
    done = _cli(env, "feedback", "import", "--data", str(good), "--json")
    assert done.returncode == 0, done.stderr
    assert '"joined": 10' in done.stdout
    assert len(labelled_predictions(settings)) == before + 10
    replay = _cli(env, "feedback", "import", "--data", str(good), "--json")
    assert '"duplicates": 10' in replay.stdout


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "churnops", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_export_then_erasure_then_only_the_tombstone(
    client: TestClient, settings: Settings, ids: list[str]
) -> None:
    customer = ids[30]
    answer = predict(client, customer)
    wait_recorded(settings, [answer["prediction_id"]])
    client.post("/v1/feedback", json={"prediction_id": answer["prediction_id"], "churned": True})
    exported = client.get(f"/v1/privacy/customers/{customer}").json()
    assert exported["erased"] is False
    assert exported["offline_features"]
    assert exported["online_store"].startswith("embedded: each server holds an in-process copy")
    prediction = next(p for p in exported["predictions"] if p["prediction_id"] == answer["prediction_id"])
    assert prediction["features"] == exported["offline_features"][-1]["values"]
    assert exported["labels"][0]["churned"] is True

    erased = client.delete(f"/v1/privacy/customers/{customer}")
    assert erased.status_code == 200, erased.text
    assert erased.json()["details"]["data_keys_destroyed"] >= 1
    after = client.get(f"/v1/privacy/customers/{customer}").json()
    assert after["erased"] is True
    assert set(after) == {"customer_id", "subject", "erased", "erased_at", "tombstone", "retained"}
    assert after["tombstone"]["action"] == "privacy.erase"
    assert client.post("/v1/predict", json={"customer_id": customer}).status_code == 404
    assert predict(client, customer, features={"tenure_months": 3})["feature_source"] == "request"
    assert client.delete(f"/v1/privacy/customers/{customer}").json()["details"]["already_erased"] is True
    assert client.post("/v1/feedback", json={"customer_id": customer, "churned": True}).status_code == 404
    time.sleep(0.3)
    result = audit.verify(settings)
    assert result.ok, result.summary()


def test_erasing_an_unknown_customer_is_404_and_writes_nothing(
    client: TestClient, settings: Settings
) -> None:
    before = audit.stats(settings)["records"]
    response = client.delete("/v1/privacy/customers/never-seen-anywhere")
    assert response.status_code == 404
    assert audit.stats(settings)["records"] == before


def test_opted_out_customers_leave_the_next_training_set(
    client: TestClient, settings: Settings, ids: list[str], pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    from churnops.io.datasets import load_spec
    from churnops.jobs.ingest import ingest
    from churnops.jobs.pipeline import privacy_filter
    from churnops.jobs.workdir import Workdir

    for customer in ids[40:45]:
        assert client.post(f"/v1/privacy/customers/{customer}/opt-out").status_code == 200
    meta = ingest(
        pipeline_run.data, load_spec("synthetic"), Workdir(tmp_path / "wd"), privacy_filter(settings)
    )
    assert meta["excluded_customers"] >= 5  # the opted out, plus anyone erased above
    kept = set(pd.read_parquet(tmp_path / "wd" / "snapshot.parquet")["customer_id"])
    assert not kept & set(ids[40:45])


def test_purge_shreds_payloads_of_periods_past_retention(settings: Settings, ids: list[str]) -> None:
    """Records of a key period that ended before the retention cut lose their payload; newer ones
    keep theirs, and the chain still verifies."""
    from churnops.core.ledger import Chain, RecordIds, sign_checkpoint
    from churnops.core.ledger_rows import Prediction, Sealer
    from churnops.io.ledger_store import LedgerStore
    from churnops.io.secrets import load_secrets
    from churnops.io.sql_store import SqlStore
    from churnops.jobs.privacy import export_customer, open_privacy, purge

    keys = load_secrets(settings)
    store = LedgerStore(SqlStore(settings.sql_store_url))
    sealer = Sealer(Chain("purge-test"), keys.pseudonym_key, keys.feature_key, keys.wrapping_key, 7)
    now_us, record_ids = time.time_ns() // 1000, RecordIds()
    customer = ids[50]
    made = {}
    for age_days in (60, 0):
        at_us = now_us - age_days * 86_400_000_000
        prediction = Prediction(
            record_ids.next(), at_us, "r", customer, None, "churn-synthetic", "1", "champion", None, None,
            "served", 0.5, True, 0.1, [("contract", 0.2)], "online_store", {"contract": "Month-to-month"},
        )  # fmt: skip
        row = sealer.prediction_row(prediction)
        made[age_days] = row[0]
        checkpoint = sign_checkpoint(
            keys.checkpoint_key, "purge-test", sealer.chain.seq, sealer.chain.head, at_us
        )
        store.append([row], sealer.take_new_keys(), [checkpoint.as_row()])
    with open_privacy(settings) as privacy:
        before = {
            p["prediction_id"]: p["features"] for p in export_customer(privacy, customer)["predictions"]
        }
        result = purge(privacy, 30, 7, "test")
        after = {p["prediction_id"]: p["features"] for p in export_customer(privacy, customer)["predictions"]}
    assert before[made[60]] == {"contract": "Month-to-month"}
    assert result["data_keys_destroyed"] >= 1
    assert after[made[60]] is None  # shredded
    assert after[made[0]] == {"contract": "Month-to-month"}  # inside retention: still readable
    assert audit.verify(settings).ok


def _predictions(privacy: object, customer: str) -> list[dict]:
    from churnops.jobs.privacy import export_customer

    return list(export_customer(privacy, customer)["predictions"])  # type: ignore[arg-type]

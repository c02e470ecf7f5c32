"""The prediction ledger on embedded defaults: one chained, sealed record per answered prediction."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from churnops.cli import app
from churnops.core import envelope
from churnops.core.ledger import pseudonym
from churnops.io.secrets import load_secrets
from churnops.jobs import audit
from churnops.jobs.audit import ledger_store
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import PipelineRun, copy_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the pipeline's home: this module's ledger starts empty and is its own."""
    target = tmp_path_factory.mktemp("ledger") / "home"
    copy_home(pipeline_run.settings.home, target)
    return target


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(churnops_home=home, CHURNOPS_AUDIT_FLUSH_MS=5, CHURNOPS_AUDIT_CHECKPOINT_SECONDS=0.2)


@pytest.fixture(scope="module")
def customers(pipeline_run: PipelineRun) -> pd.DataFrame:
    return pd.read_csv(pipeline_run.data)


@pytest.fixture(scope="module")
def traffic(settings: Settings, customers: pd.DataFrame) -> dict[str, dict]:
    """40 single predictions and a batch of 10 (one unknown customer), then a clean shutdown."""
    answered: dict[str, dict] = {}
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as client:
        for cid in customers["customer_id"].head(40):
            body = client.post("/v1/predict", json={"customer_id": cid}).json()
            answered[body["prediction_id"]] = body
        instances = [{"customer_id": c} for c in customers["customer_id"].iloc[40:49]]
        instances.append({"customer_id": "nobody-like-this"})
        batch = client.post("/v1/predict/batch", json={"instances": instances}).json()["predictions"]
        for body in batch[:-1]:
            answered[body["prediction_id"]] = body
        assert "prediction_id" not in batch[-1]
    return answered


def stored(settings: Settings) -> dict[str, dict]:
    with ledger_store(settings) as store:
        return {row["record_id"]: row for row in store.records(kind="prediction")}


def test_every_answered_prediction_is_one_record(settings: Settings, traffic: dict[str, dict]) -> None:
    records = stored(settings)
    assert set(records) == set(traffic)  # 49 answered, the unknown customer not recorded
    assert len(traffic) == 49


def test_records_carry_the_answer_and_a_pseudonym_never_the_id(
    settings: Settings, traffic: dict[str, dict]
) -> None:
    keys = load_secrets(settings)
    for prediction_id, row in stored(settings).items():
        answer = traffic[prediction_id]
        assert row["subject"] == pseudonym(keys.pseudonym_key, answer["customer_id"])
        assert (
            answer["customer_id"]
            not in orjson.dumps({k: v for k, v in row.items() if k != "payload"}).decode()
        )
        assert row["probability"] == answer["churn_probability"]
        assert row["decision"] == answer["churn"]
        assert (row["model_name"], row["model_version"], row["variant"]) == (
            "churn-synthetic",
            "1",
            "champion",
        )
        assert row["request_id"] == answer["request_id"]
        assert row["role"] == "served"
        assert [r[0] for r in orjson.loads(row["reasons"])] == [r["feature"] for r in answer["reasons"]]


def test_payloads_open_only_with_the_customers_own_key(
    settings: Settings, traffic: dict[str, dict], pipeline_run: PipelineRun
) -> None:
    from churnops.io.offline_store import SqlOfflineStore

    keys = load_secrets(settings)
    offline = SqlOfflineStore(settings.offline_store_url)
    try:
        version = offline.feature_set_versions()[0]
        vectors = offline.latest_vectors(version)
    finally:
        offline.close()
    with ledger_store(settings) as store:
        for prediction_id, row in list(stored(settings).items())[:10]:
            wrapped = store.data_keys(row["subject"])[(row["key_epoch"], row["writer_id"])]
            aad = envelope.associated_data(row["subject"], row["key_epoch"])
            data_key = envelope.unwrap_key(keys.wrapping_key, wrapped, aad)
            vector = orjson.loads(envelope.open_sealed(AESGCM(data_key), row["payload"], aad))
            assert vector == vectors[traffic[prediction_id]["customer_id"]]


def test_verify_passes_after_a_clean_shutdown(settings: Settings, traffic: dict[str, dict]) -> None:
    result = audit.verify(settings)
    assert result.ok, result.summary()
    assert result.records >= 49
    assert all(chain.checkpoints >= 1 for chain in result.chains)
    assert "ledger verified" in result.summary()


def test_the_ledger_tables_refuse_update_and_delete(settings: Settings, traffic: dict[str, dict]) -> None:
    db = sqlite3.connect(settings.home / "features.db")
    try:
        for statement in ("UPDATE ledger_records SET probability = 0.5", "DELETE FROM ledger_records"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)
    finally:
        db.close()


@pytest.fixture
def tampered(
    settings: Settings, traffic: dict[str, dict], tmp_path: Path
) -> Iterator[tuple[Settings, sqlite3.Connection]]:
    """A copy of the ledger whose append-only triggers an attacker with file access dropped."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(settings.home / "features.db", home / "features.db")
    shutil.copy(settings.home / "secrets.json", home / "secrets.json")
    db = sqlite3.connect(home / "features.db", isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    yield Settings(churnops_home=home), db
    db.close()


def _writer_rows(db: sqlite3.Connection) -> list[tuple[str, int]]:
    writer = db.execute(
        "SELECT writer_id FROM ledger_records WHERE kind = 'prediction'"
        " GROUP BY writer_id ORDER BY count(*) DESC"
    ).fetchone()[0]
    return db.execute(
        "SELECT record_id, seq FROM ledger_records WHERE writer_id = ? ORDER BY seq", (writer,)
    ).fetchall()


def _problem(settings: Settings) -> str:
    result = audit.verify(settings)
    assert not result.ok
    return result.summary()


def test_verify_names_an_edited_probability(tampered: tuple[Settings, sqlite3.Connection]) -> None:
    settings, db = tampered
    record_id, _ = _writer_rows(db)[10]
    db.execute("UPDATE ledger_records SET probability = 0.01 WHERE record_id = ?", (record_id,))
    assert record_id in _problem(settings)
    assert "edited" in _problem(settings)


def test_verify_names_the_record_after_a_deleted_one(tampered: tuple[Settings, sqlite3.Connection]) -> None:
    settings, db = tampered
    rows = _writer_rows(db)
    db.execute("DELETE FROM ledger_records WHERE record_id = ?", (rows[5][0],))
    message = _problem(settings)
    assert rows[6][0] in message
    assert "deleted" in message


def test_verify_finds_two_swapped_rows(tampered: tuple[Settings, sqlite3.Connection]) -> None:
    settings, db = tampered
    rows = _writer_rows(db)
    (a, seq_a), (b, seq_b) = rows[3], rows[4]
    db.execute("UPDATE ledger_records SET seq = -1 WHERE record_id = ?", (a,))
    db.execute("UPDATE ledger_records SET seq = ? WHERE record_id = ?", (seq_a, b))
    db.execute("UPDATE ledger_records SET seq = ? WHERE record_id = ?", (seq_b, a))
    message = _problem(settings)
    assert b in message
    assert "reordered" in message


def test_verify_finds_a_truncated_tail(tampered: tuple[Settings, sqlite3.Connection]) -> None:
    settings, db = tampered
    rows = _writer_rows(db)
    db.execute("DELETE FROM ledger_records WHERE record_id IN (?, ?)", (rows[-1][0], rows[-2][0]))
    assert "truncated" in _problem(settings)


def test_audit_stats_and_export(
    settings: Settings, traffic: dict[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = audit.stats(settings)
    assert counts["by_kind"]["prediction"] == 49
    monkeypatch.setenv("CHURNOPS_HOME", str(settings.home))
    shown = CliRunner().invoke(app, ["audit", "stats"])
    assert shown.exit_code == 0, shown.output
    by_kind = next(line for line in shown.output.splitlines() if line.startswith("by_kind"))
    assert "prediction 49" in by_kind, by_kind
    assert "{" not in by_kind, by_kind  # words, not a dict's repr
    out = tmp_path / "export.jsonl"
    assert audit.export(settings, "2000-01-01", out) == counts["records"]
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {line["record_id"] for line in lines} >= set(traffic)
    text = out.read_text()
    assert all(answer["customer_id"] not in text for answer in traffic.values())
    assert "payload" not in lines[0]


def test_the_ledgers_own_cost_is_in_the_metrics(
    pipeline_run: PipelineRun, customers: pd.DataFrame, tmp_path: Path
) -> None:
    """audit_seal_seconds: what sealing one record costs the serving core (sum over count), beside
    audit_write_seconds per stored batch; audit_vectors_sealed_total: the second prediction for a
    customer whose stored vector is unchanged reuses its ciphertext."""
    import time

    copy_home(pipeline_run.settings.home, tmp_path / "home")
    settings = Settings(churnops_home=tmp_path / "home", CHURNOPS_AUDIT_FLUSH_MS=5)
    values: dict[str, float] = {}
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as client:
        for cid in [*customers["customer_id"].head(30)] * 2:
            assert client.post("/v1/predict", json={"customer_id": cid}).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and values.get("audit_seal_seconds_count", 0) < 60:
            time.sleep(0.2)  # the metrics snapshot is refreshed once a second
            lines = client.get("/metrics").text.splitlines()
            values = {
                n: float(v) for n, _, v in (line.partition(" ") for line in lines) if n.startswith("audit_")
            }
    assert values["audit_seal_seconds_count"] == 60
    assert 0 < values["audit_seal_seconds_sum"] < 60 * 0.01  # tens of microseconds a record, not ms
    assert values["audit_vectors_sealed_total"] == 30
    assert values["audit_write_seconds_count"] >= 1
    assert values['audit_records_total{outcome="written"}'] == 60

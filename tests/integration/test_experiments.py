"""Experiments in the running service: sticky arms pinned to versions, shadows, batches, results,
and every bad definition refused with the field named."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.core.params import Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec, write_table
from churnops.io.registry import MlflowRegistry
from churnops.jobs.audit import ledger_store
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import PipelineRun, copy_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(
    pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory, fast_params: Params
) -> Settings:
    """The pipeline's home plus a second, genuinely different model (other data): v1 and v2 answer
    differently for the same customer."""
    root = tmp_path_factory.mktemp("experiments")
    home = copy_home(pipeline_run.settings.home, root / "home")
    settings = Settings(churnops_home=home, CHURNOPS_AUDIT_FLUSH_MS=5)
    other = write_table(generate_customers(3000, seed=99).head(1500), root / "other.csv")
    run_pipeline(other, load_spec("synthetic"), fast_params, settings, Workdir(root / "wd"))
    return settings


@pytest.fixture(scope="module")
def versions(settings: Settings) -> list[str]:
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    found = sorted({v["version"] for v in registry.list_versions("churn-synthetic")}, key=int)
    assert len(found) >= 2
    return found


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def ids(pipeline_run: PipelineRun) -> list[str]:
    return list(pd.read_csv(pipeline_run.data)["customer_id"].head(400))


def definition(name: str, versions: list[str], **extra: Any) -> dict[str, Any]:
    v1, v2 = versions[0], versions[-1]
    arms = [
        {"name": "control", "version": v1, "weight": 40, "control": True},
        {"name": "challenger", "version": v2, "weight": 15},
        {"name": "c2", "version": v1, "weight": 15},
        {"name": "d", "version": v2, "weight": 15},
        {"name": "e", "version": v1, "weight": 15},
    ]
    return {"name": name, "arms": arms, **extra}


def wait_for_experiment(client: TestClient, name: str | None, timeout: float = 3.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        current = client.get("/v1/models").json()["experiment"]
        if (current or {}).get("name") == name or (name is None and current is None):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"the service did not pick up experiment {name!r} within {timeout} s")


def test_a_five_arm_experiment_routes_sticky_customers_to_pinned_versions(
    client: TestClient, settings: Settings, versions: list[str], ids: list[str]
) -> None:
    created = client.post("/v1/experiments", json=definition("five-arms", versions))
    assert created.status_code == 201, created.text
    assert wait_for_experiment(client, "five-arms") < 2.0  # within 2 s of its creation
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    bundles = {v: registry.load_bundle("churn-synthetic", v) for v in {versions[0], versions[-1]}}
    pinned = {a["name"]: a["version"] for a in definition("x", versions)["arms"]}
    arms: dict[str, str] = {}
    for customer in ids[:200]:
        body = client.post("/v1/predict", json={"customer_id": customer}).json()
        arm, version = body["model"]["variant"], body["model"]["version"]
        assert pinned[arm] == version
        arms[customer] = arm
        again = client.post("/v1/predict", json={"customer_id": customer}).json()
        assert again["model"]["variant"] == arm  # sticky
    assert set(arms.values()) == set(pinned)  # every arm served someone
    # Each arm's answer is its own version's: v1 and v2 differ, and the probability is that version's.
    offline = _vectors(settings)
    for customer in ids[:40]:
        body = client.post("/v1/predict", json={"customer_id": customer}).json()
        expected = bundles[body["model"]["version"]].predict_proba(pd.DataFrame([offline[customer]]))[0]
        assert body["churn_probability"] == pytest.approx(expected, abs=1e-9)
    differ = [
        bundles[versions[0]].predict_proba(pd.DataFrame([offline[c]]))[0]
        != bundles[versions[-1]].predict_proba(pd.DataFrame([offline[c]]))[0]
        for c in ids[:40]
    ]
    assert all(differ)
    time.sleep(0.2)
    with ledger_store(settings) as store:
        rows = [r for r in store.records(kind="prediction") if r["experiment"] == "five-arms"]
    assert rows
    assert {r["role"] for r in rows} == {"served"}
    assert all(0 <= r["bucket"] < 10_000 for r in rows)
    assert {r["variant"] for r in rows} == set(pinned)
    metrics = client.get("/metrics").text
    assert 'experiment_assignments_total{experiment="five-arms",arm="control"}' in metrics
    assert 'experiment_srm_p_value{experiment="five-arms"}' in metrics


def test_a_batch_is_routed_and_recorded_per_instance(
    client: TestClient, settings: Settings, ids: list[str]
) -> None:
    single = {c: client.post("/v1/predict", json={"customer_id": c}).json() for c in ids[200:260]}
    batch = client.post("/v1/predict/batch", json={"instances": [{"customer_id": c} for c in ids[200:260]]})
    assert batch.status_code == 200
    for item in batch.json()["predictions"]:
        alone = single[item["customer_id"]]
        assert item["model"] == alone["model"]  # the same arm as the same customer alone
        assert item["churn_probability"] == alone["churn_probability"]
    time.sleep(0.2)
    batch_ids = {item["prediction_id"] for item in batch.json()["predictions"]}
    with ledger_store(settings) as store:
        recorded = {
            r["record_id"]: r for r in store.records(kind="prediction") if r["record_id"] in batch_ids
        }
    assert set(recorded) == batch_ids
    assert all(r["experiment"] == "five-arms" for r in recorded.values())


def test_bad_definitions_are_refused_naming_the_field(client: TestClient, versions: list[str]) -> None:
    base = definition("bad", versions)
    cases = {
        "weight": (lambda d: d["arms"][1].update(weight=-1), "arms.1.weight"),
        "duplicate": (lambda d: d["arms"][2].update(name="challenger"), "arms.2.name"),
        "no control": (lambda d: d["arms"][0].update(control=False), "arms"),
        "alias": (lambda d: d["arms"][1].update(version="champion"), "arms.1.version"),
        "zero total": (lambda d: [a.update(weight=0) for a in d["arms"]], "arms"),
    }
    for label, (mutate, field) in cases.items():
        body = {**base, "arms": [dict(a) for a in base["arms"]]}
        mutate(body)
        response = client.post("/v1/experiments", json=body)
        assert response.status_code == 422, (label, response.text)
        assert response.json()["error"]["field"].startswith(field), (label, response.json())
    unknown = {**base, "arms": [dict(a) for a in base["arms"]]}
    unknown["arms"][1]["version"] = "999"
    response = client.post("/v1/experiments", json=unknown)
    assert response.status_code == 422
    assert "has no version '999'" in response.json()["error"]["message"]
    second = client.post("/v1/experiments", json=definition("second", versions))
    assert second.status_code == 409
    assert "is running over the same traffic" in second.json()["error"]["message"]
    assert client.post("/v1/experiments/nope/stop").status_code == 404
    assert client.post("/v1/experiments/five-arms/promote", json={"arm": "nope"}).status_code == 404
    assert client.get("/v1/experiments").json()[0]["name"] == "five-arms"  # nothing half-created


def test_reweight_moves_few_customers_and_the_service_follows(client: TestClient, ids: list[str]) -> None:
    before = {c: client.post("/v1/predict", json={"customer_id": c}).json()["model"]["variant"] for c in ids}
    response = client.patch("/v1/experiments/five-arms", json={"weights": {"control": 35, "challenger": 20}})
    assert response.status_code == 200, response.text
    assert 0.04 < response.json()["moved_share"] <= 0.06
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.get("/v1/models").json()["experiment"]["revision"] < 2:
        time.sleep(0.05)
    after = {c: client.post("/v1/predict", json={"customer_id": c}).json()["model"]["variant"] for c in ids}
    moved = [c for c in ids if before[c] != after[c]]
    assert len(moved) / len(ids) < 0.12  # ~5% expected on 400 customers
    assert all(before[c] == "control" and after[c] == "challenger" for c in moved)


def test_results_join_labels_per_arm(
    client: TestClient, settings: Settings, ids: list[str], tmp_path: Path
) -> None:
    answers = [client.post("/v1/predict", json={"customer_id": c}).json() for c in ids]
    time.sleep(0.3)
    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        {
            "prediction_id": [a["prediction_id"] for a in answers],
            "churned": [bool(rng.random() < a["churn_probability"]) for a in answers],
        }
    )
    path = tmp_path / "labels.csv"
    labels.to_csv(path, index=False)
    env = {"CHURNOPS_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "churnops", "feedback", "import", "--data", str(path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = client.get("/v1/experiments/five-arms/results").json()
    assert {arm["name"] for arm in page["arms"]} == {"control", "challenger", "c2", "d", "e"}
    assert sum(arm["labelled"] for arm in page["arms"]) >= len(ids)
    assert "p_value" in page["srm"]
    challenger = next(arm for arm in page["arms"] if arm["name"] == "challenger")
    assert challenger["decision"]["decision"] in {"keep running", "better", "worse", "no difference"}
    assert challenger["decision"]["reason"]


def test_shadows_are_recorded_never_returned(
    client: TestClient, settings: Settings, versions: list[str], ids: list[str]
) -> None:
    assert client.post("/v1/experiments/five-arms/stop").status_code == 200
    wait_for_experiment(client, None)
    body = definition(
        "with-shadows", versions, shadows=[{"name": "shadow-v2", "version": versions[-1], "sample": 1.0}]
    )
    assert client.post("/v1/experiments", json=body).status_code == 201
    wait_for_experiment(client, "with-shadows")
    answers = [client.post("/v1/predict", json={"customer_id": c}).json() for c in ids[:50]]
    assert all(a["model"]["variant"] != "shadow-v2" for a in answers)
    time.sleep(0.3)
    served = {a["request_id"] for a in answers}
    with ledger_store(settings) as store:
        rows = [r for r in store.records(kind="prediction") if r["experiment"] == "with-shadows"]
    shadows = [r for r in rows if r["role"] == "shadow"]
    assert {r["request_id"] for r in shadows} >= served  # every request scored by the shadow too
    assert {r["variant"] for r in shadows} == {"shadow-v2"}
    assert (
        'shadow_predictions_total{experiment="with-shadows",shadow="shadow-v2",outcome="ok"}'
        in client.get("/metrics").text
    )


def test_promote_goes_through_the_gates_and_ends_the_experiment(
    client: TestClient, settings: Settings, versions: list[str]
) -> None:
    """The winner goes through the one promotion path: v2 (trained on 1,500 rows) is no better than the
    champion on rows neither trained on, so the gate refuses it and the experiment keeps running; the
    control arm (the champion) ends it without a move."""
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    refused = client.post("/v1/experiments/with-shadows/promote", json={"arm": "challenger"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"].startswith(f"v{versions[-1]} refused: gate ")
    assert registry.alias_version("churn-synthetic", "champion") == versions[0]
    assert client.get("/v1/experiments/with-shadows").json()["status"] == "running"
    response = client.post("/v1/experiments/with-shadows/promote", json={"arm": "control"})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == versions[0]
    assert registry.alias_version("churn-synthetic", "champion") == versions[0]
    wait_for_experiment(client, None)
    assert client.get("/v1/experiments/with-shadows").json()["status"] == "promoted"


def test_cli_refuses_a_malformed_file_in_one_line(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "exp.yaml"
    bad.write_text("name: x\narms: [\n")
    env = {"CHURNOPS_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "churnops", "experiments", "create", "--file", str(bad)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1


def _vectors(settings: Settings) -> dict[str, dict[str, Any]]:
    from churnops.io.offline_store import SqlOfflineStore

    offline = SqlOfflineStore(settings.offline_store_url)
    try:
        version = offline.feature_set_versions()[0]
        return offline.latest_vectors(version)
    finally:
        offline.close()


def test_a_bandit_moves_traffic_to_the_better_arm_and_keeps_every_floor(
    client: TestClient, settings: Settings, versions: list[str], ids: list[str], tmp_path: Path
) -> None:
    from churnops.jobs.experiments import bandit_update, open_experiments

    arms = [
        {"name": "base", "version": versions[0], "weight": 1, "control": True},
        {"name": "good", "version": versions[-1], "weight": 1},
        {"name": "bad", "version": versions[0], "weight": 1},
    ]
    body = {"name": "bandit", "mode": "bandit", "arms": arms, "min_labels_per_arm": 30, "bandit_floor": 0.05}
    assert client.post("/v1/experiments", json=body).status_code == 201
    wait_for_experiment(client, "bandit")
    answers = [client.post("/v1/predict", json={"customer_id": c}).json() for c in ids]
    time.sleep(0.3)
    rng = np.random.default_rng(1)
    drawn = []
    for a in answers:  # labels that make `good` calibrated, `bad` confidently wrong
        churned = bool(rng.random() < a["churn_probability"])
        drawn.append(not churned if a["model"]["variant"] == "bad" else churned)
    path = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": [a["prediction_id"] for a in answers], "churned": drawn}).to_csv(
        path, index=False
    )
    env = {"CHURNOPS_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-m", "churnops", "feedback", "import", "--data", str(path)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    with open_experiments(settings) as ctx:
        done = bandit_update(ctx, "bandit", Params().business)
        history = ctx.store.history("bandit")
    weights = done["weights"]
    assert done["changed"] is True
    assert weights["bad"] == pytest.approx(3 * 0.05, abs=0.01)  # pushed to its floor, never below
    assert weights["bad"] < weights["base"]
    assert weights["bad"] < weights["good"]
    assert sum(weights.values()) == pytest.approx(3)
    assert [h["action"] for h in history] == ["create", "bandit"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and client.get("/v1/models").json()["experiment"]["revision"] < 2:
        time.sleep(0.05)
    assert client.get("/v1/models").json()["experiment"]["weights"]["bad"] == pytest.approx(weights["bad"])
    assert client.post("/v1/experiments/bandit/stop").status_code == 200

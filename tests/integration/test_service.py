"""The scoring service in-process (TestClient runs the lifespan): shapes, errors, metrics, reloads."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.io.registry import MlflowRegistry
from churnops.jobs.keys import create_key
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.conftest import PipelineRun, mlflow_at

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(pipeline_run: PipelineRun) -> Iterator[TestClient]:
    settings = Settings(
        churnops_home=pipeline_run.settings.home,
        CHURNOPS_RELOAD_POLL_SECONDS=0.5,
        CHURNOPS_ACCESS_LOG_SAMPLE=1.0,
    )
    key = create_key(settings, name="test-service", scopes="predict,admin,audit", rate_limit="1000000/minute")
    with TestClient(serving_app(settings), headers={"X-API-Key": key.key}) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def customers(pipeline_run: PipelineRun) -> pd.DataFrame:
    return pd.read_csv(pipeline_run.data)


def predict(client: TestClient, payload: object, **kwargs: object) -> tuple[int, dict]:
    response = client.post("/v1/predict", json=payload, **kwargs)
    return response.status_code, response.json()


def test_known_customer(client: TestClient, customers: pd.DataFrame, pipeline_run: PipelineRun) -> None:
    customer = customers.iloc[3]["customer_id"]
    response = client.post("/v1/predict", json={"customer_id": customer}, headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "customer_id",
        "churn_probability",
        "churn",
        "threshold",
        "model",
        "reasons",
        "feature_source",
        "prediction_id",
        "request_id",
    }
    assert body["customer_id"] == customer
    assert body["request_id"] == "abc-123" == response.headers["x-request-id"]
    assert body["feature_source"] == "online_store"
    assert body["model"] == {"name": "churn-synthetic", "version": "1", "variant": "champion"}
    assert body["churn"] == (body["churn_probability"] >= body["threshold"])
    spec_features = set(pipeline_run.workdir.read_spec().feature_columns)
    assert len(body["reasons"]) == 3
    assert {r["feature"] for r in body["reasons"]} <= spec_features


def test_matches_the_registered_pyfunc(
    client: TestClient, customers: pd.DataFrame, pipeline_run: PipelineRun
) -> None:
    """The hot path and `mlflow.pyfunc` give the same probability: no training/serving skew."""
    with mlflow_at(pipeline_run.settings.tracking_uri):
        model = mlflow.pyfunc.load_model("models:/churn-synthetic@champion")
    rows = customers.head(25)
    expected = np.asarray(model.predict(rows))
    served = [predict(client, {"customer_id": cid})[1]["churn_probability"] for cid in rows["customer_id"]]
    np.testing.assert_allclose(served, expected, rtol=1e-9, atol=1e-12)


def test_request_features_override_and_complete(client: TestClient, customers: pd.DataFrame) -> None:
    customer = customers.iloc[5]["customer_id"]
    _, stored = predict(client, {"customer_id": customer})
    _, overridden = predict(
        client, {"customer_id": customer, "features": {"contract": "Two year", "support_calls": 0}}
    )
    assert overridden["feature_source"] == "online_store+request"
    assert overridden["churn_probability"] != stored["churn_probability"]
    status, fresh = predict(
        client, {"customer_id": "NEW-1", "features": {"contract": "Month-to-month", "age": 30}}
    )
    assert status == 200
    assert fresh["feature_source"] == "request"


def test_unknown_category_and_nulls_never_500(client: TestClient, customers: pd.DataFrame) -> None:
    status, body = predict(
        client,
        {
            "customer_id": customers.iloc[0]["customer_id"],
            "features": {"region": "Atlantis", "monthly_charges": None, "contract": None},
        },
    )
    assert status == 200
    assert 0 < body["churn_probability"] < 1


@pytest.mark.parametrize(
    ("payload", "status", "field", "words"),
    [
        ({"customer_id": "NOPE"}, 404, None, "no stored features"),
        ({"customer_id": 42}, 422, "customer_id", "Expected `str`"),
        ({}, 422, None, "customer_id"),
        ({"customer_id": "C1", "colour": "red"}, 422, "colour", "unknown field"),
        ({"customer_id": "C1", "features": {"shoe_size": 9}}, 422, "features.shoe_size", "unknown feature"),
        ({"customer_id": "C1", "features": {"age": "old"}}, 422, "features.age", "expected a number"),
        ({"customer_id": "C1", "features": {"age": [1, 2]}}, 422, "features.age", "got list"),
        ({"customer_id": ""}, 422, "customer_id", "1 to 128"),
    ],
)
def test_bad_requests(client: TestClient, payload: dict, status: int, field: str | None, words: str) -> None:
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if field:
        assert error["field"] == field
    assert "Traceback" not in response.text


def test_malformed_json_and_empty_body(client: TestClient) -> None:
    for body in (b"{not json", b""):
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_request"


def test_body_over_one_mib(client: TestClient) -> None:
    big = json.dumps({"customer_id": "C1", "features": {"region": "x" * (1 << 20)}})
    response = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_batch(client: TestClient, customers: pd.DataFrame) -> None:
    ids = list(customers["customer_id"].head(50))
    response = client.post(
        "/v1/predict/batch", json={"instances": [{"customer_id": c} for c in [*ids, "NOPE"]]}
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["customer_id"] for p in predictions] == [*ids, "NOPE"]
    assert predictions[-1]["error"]["code"] == "not_found"
    assert len({p["model"]["version"] for p in predictions[:-1]}) == 1
    _, single = predict(client, {"customer_id": ids[7]})
    assert predictions[7]["churn_probability"] == single["churn_probability"]


def test_batch_limits(client: TestClient) -> None:
    assert client.post("/v1/predict/batch", json={"instances": []}).status_code == 422
    too_many = {"instances": [{"customer_id": f"C{i}"} for i in range(10_001)]}
    response = client.post("/v1/predict/batch", json=too_many)
    assert response.status_code == 413
    assert "10001" in response.json()["error"]["message"]
    bad_item = client.post(
        "/v1/predict/batch", json={"instances": [{"customer_id": "C1", "features": {"x": 1}}]}
    )
    assert bad_item.status_code == 422
    assert bad_item.json()["error"]["field"] == "instances.0.features.x"


def test_models_health_and_openapi(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert models["champion"] == "1"
    assert models["slots"][0]["variant"] == "champion"
    assert models["online_store"]["entities"] == 4000
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["golden_requests"] == 5
    schema = client.get("/openapi.json").json()
    predict_op = schema["paths"]["/v1/predict"]["post"]
    ref = predict_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body_schema = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert body_schema["required"] == ["customer_id"]
    assert "/v1/predict/batch" in schema["paths"]


def test_metrics_exposition(client: TestClient, customers: pd.DataFrame) -> None:
    before = client.get("/metrics").text
    for cid in customers["customer_id"].head(5):
        predict(client, {"customer_id": cid})
    text = client.get("/metrics").text
    assert "inference_latency_seconds_bucket" in text
    assert 'model_version_info{model="churn-synthetic",model_version="1",variant="champion"' in text
    assert 'circuit_breaker_state{dependency="registry"}' in text or "circuit_breaker_state" in text

    def count(exposition: str) -> float:
        key = (
            'predictions_total{variant="champion",model_version="1",outcome="ok",'
            'feature_source="online_store"}'
        )
        lines = [line for line in exposition.splitlines() if line.startswith(key)]
        return float(lines[0].split()[-1]) if lines else 0.0

    assert count(text) - count(before) == 5


def test_unknown_route_is_json(client: TestClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_champion_swap_without_downtime(
    client: TestClient, pipeline_run: PipelineRun, customers: pd.DataFrame
) -> None:
    """Register a second version, promote it: the server follows within seconds; every request succeeds."""
    registry = MlflowRegistry(pipeline_run.settings.tracking_uri, pipeline_run.settings.artifact_root)
    run_id = pipeline_run.result["register"]["model_uri"]
    assert run_id
    with registry.run("extra", {}) as extra_run:
        version = registry.log_model(
            extra_run,
            pipeline_run.workdir.bundle,
            "churn-synthetic",
            customers.head(3).drop(columns=["churn"]),
            {},
        )
    registry.set_alias("churn-synthetic", "champion", version)
    deadline = time.monotonic() + 5
    seen = set()
    while time.monotonic() < deadline:
        status, body = predict(client, {"customer_id": customers.iloc[1]["customer_id"]})
        assert status == 200
        seen.add(body["model"]["version"])
        if body["model"]["version"] == version:
            break
        time.sleep(0.05)
    assert version in seen
    assert client.get("/v1/models").json()["champion"] == version
    registry.set_alias("churn-synthetic", "champion", "1")  # leave the shared registry as found

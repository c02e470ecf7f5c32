"""Monitoring wired end to end in the service: profile from training, counts on the hot path, windows
merged in the SQL store, reports over HTTP, gauges at /metrics, the dashboard's data, Grafana's names."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.core.drift_profile import ReferenceProfile
from churnops.core.split import HOLDOUT
from churnops.io.pyfunc_model import load_bundle
from churnops.io.registry import PROFILE_TAG, MlflowRegistry
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import REPO, PipelineRun
from tests.monitoring_helpers import private_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return private_home(pipeline_run.settings.home, tmp_path_factory.mktemp("monitoring") / "home")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    settings = Settings(
        churnops_home=home,
        CHURNOPS_MONITOR_FLUSH_SECONDS=0.2,
        CHURNOPS_MONITOR_REFRESH_SECONDS=0.3,
        CHURNOPS_COST_SAMPLE=1,
    )
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def customers(pipeline_run: PipelineRun) -> pd.DataFrame:
    return pd.read_csv(pipeline_run.data)


def wait_for(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_training_stores_the_profile_of_the_training_rows(pipeline_run: PipelineRun) -> None:
    bundle = load_bundle(pipeline_run.workdir.bundle)
    profile = ReferenceProfile.from_dict(bundle.metadata["reference_profile"])
    split = pd.read_parquet(pipeline_run.workdir.split)["split"]
    assert profile.n_rows == int((split != HOLDOUT).sum())  # fit + validation, never the holdout
    profile.check_spec(bundle.spec)
    registry = MlflowRegistry(pipeline_run.settings.tracking_uri, pipeline_run.settings.artifact_root)
    assert registry.version_tags("churn-synthetic", "1")[PROFILE_TAG] == profile.fingerprint()
    assert registry.reference_profile("churn-synthetic", "1") == profile.to_dict()


def test_before_any_prediction_every_report_says_not_enough_data(client: TestClient) -> None:
    for kind in ("drift", "performance", "cost"):
        body = client.get(f"/v1/monitoring/{kind}").json()
        assert body["status"] == "no_data", body
        assert body["message"].startswith("not enough data"), body
    data = client.get("/dashboard/data").json()
    assert data["predictions"] == []
    assert data["drift"]["variants"] == []
    assert client.get("/dashboard/alias-moves").json() == []  # this module's ledger starts empty


@pytest.mark.parametrize(
    ("path", "field", "words"),
    [
        ("/v1/monitoring/drift?window=fortnight", "window", "unknown window"),
        ("/v1/monitoring/drift?window=0", "window", "at least 1"),
        ("/v1/monitoring/drift?metric=ks", "metric", "unknown drift statistic"),
        ("/v1/monitoring/performance?metric=accuracy", "metric", "unknown realised metric"),
        ("/v1/monitoring/performance?kind=guessed", "kind", "unknown performance kind"),
        ("/v1/monitoring/cost?window=1y", "window", "unknown window"),
    ],
)
def test_bad_monitoring_input_is_a_clear_422(client: TestClient, path: str, field: str, words: str) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]


def test_served_traffic_is_counted_merged_and_judged(client: TestClient, customers: pd.DataFrame) -> None:
    ids = list(customers["customer_id"].head(300))
    for cid in ids[:50]:
        assert client.post("/v1/predict", json={"customer_id": cid}).status_code == 200
    small = wait_for(lambda: client.get("/v1/monitoring/drift").json()["variants"])
    assert small[0]["status"] == "not_judged"  # 50 < min_window: statistics shown, nothing flagged
    assert "not judged: N=" in small[0]["message"]
    batch = {"instances": [{"customer_id": c} for c in ids] * 4}  # 1,200 clean predictions
    assert client.post("/v1/predict/batch", json=batch).status_code == 200

    def judged() -> dict | None:
        answer = client.get("/v1/monitoring/drift").json()["variants"][0]
        return answer if answer["report"]["n"] >= 1250 else None

    answer = wait_for(judged)
    assert answer is not None
    assert answer["report"]["judged"]
    assert answer["model_version"] == "1"
    statuses = {f["feature"]: f["status"] for f in answer["report"]["features"]}
    assert statuses["contract"] == "ok", answer["message"]
    window = client.get("/v1/monitoring/drift?window=100&metric=js_distance").json()["variants"][0]
    assert 100 <= window["report"]["n"] < 1250  # the newest rows only, not the whole hour
    assert set(window["report"]["statistic"]["values"]) == set(statuses)


def test_an_encoding_change_is_answered_and_alerts_within_one_window(
    client: TestClient, customers: pd.DataFrame
) -> None:
    ids = list(customers["customer_id"].iloc[300:1500])
    recoded = {"instances": [{"customer_id": c, "features": {"contract": "M2M"}} for c in ids]}
    response = client.post("/v1/predict/batch", json=recoded)
    assert response.status_code == 200
    assert all(0 < p["churn_probability"] < 1 for p in response.json()["predictions"])

    def alerted() -> dict | None:
        answer = client.get("/v1/monitoring/drift?window=1200").json()["variants"][0]
        contract = next(f for f in answer["report"]["features"] if f["feature"] == "contract")
        return answer if contract["status"] == "alert" else None

    answer = wait_for(alerted)
    assert answer is not None, client.get("/v1/monitoring/drift?window=1200").json()
    contract = answer["report"]["features"][0]  # worst first
    assert contract["feature"] == "contract"
    assert contract["unseen_share"] > 0.9
    assert any("unseen categories" in r for r in contract["reasons"])
    metrics = wait_for(lambda: 'feature_drift_psi{feature="contract"' in client.get("/metrics").text)
    assert metrics


def test_cost_is_measured_and_priced(client: TestClient, customers: pd.DataFrame) -> None:
    for cid in customers["customer_id"].head(20):
        client.post("/v1/predict", json={"customer_id": cid})
    body = wait_for(lambda: (b := client.get("/v1/monitoring/cost").json())["status"] == "ok" and b)
    champion = next(v for v in body["variants"] if v["variant"] == "champion")
    assert champion["predictions"] >= 20
    assert champion["request_cpu_seconds"] > 0
    assert 0 < champion["per_1000_usd"] < 1.0
    assert body["anomaly"]["champion"]["status"] == "not_judged"  # no trailing windows yet
    assert wait_for(lambda: "cost_per_1000_predictions_usd{variant=" in client.get("/metrics").text)


def test_performance_is_estimated_before_labels_and_realised_after(
    client: TestClient, customers: pd.DataFrame
) -> None:
    predictions = [
        client.post("/v1/predict", json={"customer_id": c}).json() for c in customers["customer_id"].head(30)
    ]
    for p in predictions[:10]:
        label = {"prediction_id": p["prediction_id"], "churned": True}  # its record is durable within 100 ms
        assert wait_for(lambda label=label: client.post("/v1/feedback", json=label).status_code == 200)
    body = wait_for(lambda: (b := client.get("/v1/monitoring/performance").json())["cohorts"] and b)
    cohort = body["cohorts"][-1]
    assert cohort["n_labelled"] >= 10
    assert cohort["n_predicted"] >= cohort["n_labelled"]
    assert cohort["estimated"]["roc_auc"] is not None  # estimated from the probabilities alone
    assert cohort["realised_status"].startswith("not enough data")  # 10 labels < min 200
    assert body["latest"]["champion"]["estimated"]["roc_auc"] > 0.5
    series = client.get("/v1/monitoring/performance?metric=roc_auc&kind=estimated").json()["series"]
    assert series
    assert series[-1]["value"] is not None


def _metric_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            if kind == "summary":
                names |= {f"{name}_count", f"{name}_sum"}
    return names


PROMQL_WORDS = {
    "sum",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "histogram_quantile",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "bottomk",
    "clamp_min",
    "clamp_max",
    "avg_over_time",
    "max_over_time",
    "quantile_over_time",
    "offset",
    "and",
    "or",
    "unless",
    "le",
    "bool",
    "abs",
    "delta",
    "deriv",
    "time",
    "vector",
    "scalar",
    "label_replace",
    "sort_desc",
    "absent",
}


def test_every_grafana_expression_names_an_exported_metric(client: TestClient) -> None:
    exported = _metric_names(client.get("/metrics").text)
    dashboard = json.loads((REPO / "monitoring" / "grafana" / "churnops.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(expressions) >= 10
    for expr in expressions:
        stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
        stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
        words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped)) - PROMQL_WORDS
        names = {w for w in words if not re.fullmatch(r"\d+[smhdw]?", w)}
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not at /metrics"


def test_a_version_trained_before_profiles_gets_one_by_backfill(home: Path, tmp_path: Path) -> None:
    from churnops.core.params import Params
    from churnops.io.pyfunc_model import save_bundle
    from churnops.jobs.monitor_profile import backfill_profile
    from churnops.jobs.register import _input_example
    from churnops.jobs.workdir import Workdir

    settings = Settings(churnops_home=home)
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root, settings.experiment_name)
    workdir = Workdir(home / "pipeline")
    bundle = load_bundle(workdir.bundle)
    trained_with = bundle.metadata.pop("reference_profile")
    save_bundle(bundle, tmp_path / "bundle.pkl")
    tags = {k: v for k, v in registry.version_tags("churn-synthetic", "1").items() if k != PROFILE_TAG}
    example = _input_example(workdir.read_snapshot(), bundle.spec)
    with registry.run("trained-before-profiles", {}) as run_id:
        version = registry.log_model(run_id, tmp_path / "bundle.pkl", "churn-synthetic", example, tags)
    assert registry.reference_profile("churn-synthetic", version) is None
    assert "reference_profile" not in registry.load_bundle("churn-synthetic", version).metadata

    result = backfill_profile(settings, Params(), version)
    profile = ReferenceProfile.from_dict(trained_with)
    assert result["fingerprint"] == profile.fingerprint()  # the same model on the same training rows
    assert result["rows"] == profile.n_rows
    assert registry.load_bundle("churn-synthetic", version).metadata["reference_profile"] == trained_with


def test_monitor_run_recomputes_stores_reports_and_stops_on_sigterm(home: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from churnops.io.monitor_store import MonitorStore

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env |= {"CHURNOPS_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "churnops", "monitor", "run", "--every", "1s"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = MonitorStore.open(Settings(churnops_home=home).sql_store_url)
    try:
        before = len(store.reports("cost"))
        assert wait_for(lambda: len(store.reports("cost")) >= before + 2, timeout=60)  # two ticks
        kinds = {kind for kind in ("drift", "performance", "cost") if store.reports(kind)}
        assert kinds == {"drift", "performance", "cost"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        store.close()
    assert proc.returncode == 0, err
    assert "drift: " in out
    assert "monitor run stopped" in err

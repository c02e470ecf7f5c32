"""The registry watcher survives a version that cannot be loaded, and says so in the metrics."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.io.registry import MlflowRegistry
from churnops.serving import reload
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import PipelineRun, copy_home

pytestmark = pytest.mark.integration


@pytest.fixture
def home(pipeline_run: PipelineRun, tmp_path: Any) -> Any:
    target = tmp_path / "home"
    copy_home(pipeline_run.settings.home, target)
    return target


def _register_copy(home: Any, pipeline_run: PipelineRun, customers: pd.DataFrame) -> str:
    settings = Settings(churnops_home=home)
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    with registry.run("copy", {}) as run_id:
        version = registry.log_model(
            run_id,
            pipeline_run.workdir.bundle,
            "churn-synthetic",
            customers.head(3).drop(columns=["churn"]),
            {},
        )
    registry.set_alias("churn-synthetic", "champion", version)
    return version


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def _wait_for(client: TestClient, version: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/v1/models").json()["champion"] == version:
            return True
        time.sleep(0.1)
    return False


def test_a_version_that_fails_to_build_keeps_the_watcher_alive(
    home: Any, pipeline_run: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = pd.read_csv(pipeline_run.data)
    real_build = reload.build_slot
    calls: list[str] = []

    def build_slot_once_broken(name: str, version: str, variant: str, bundle: Any) -> Any:
        calls.append(version)
        if len(calls) == 1:
            raise ValueError("FastModel.build: unsupported tree layout")  # not a ChurnopsError
        return real_build(name, version, variant, bundle)

    monkeypatch.setattr(reload, "build_slot", build_slot_once_broken)
    settings = Settings(churnops_home=home, CHURNOPS_RELOAD_POLL_SECONDS=0.2)
    client_app = serving_app(settings)
    with TestClient(client_app, headers=all_scopes(settings)) as client:
        served = client.get("/v1/models").json()["champion"]
        broken = _register_copy(home, pipeline_run, customers)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _metric(client, "model_load_failures_total") < 1:
            time.sleep(0.1)
        assert _metric(client, "model_load_failures_total") == 1
        assert client.get("/v1/models").json()["champion"] == served  # the verified model keeps serving
        assert client.get("/health/ready").status_code == 200
        assert _metric(client, 'background_task_up{task="registry-watcher"}') == 1
        good = _register_copy(home, pipeline_run, customers)
        assert _wait_for(client, good, 10), "the watcher died: a later good version was never loaded"
        assert broken != good

"""No unaudited prediction is ever answered: a record that cannot even be queued refuses the request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.jobs.audit import ledger_store
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.conftest import PipelineRun, copy_home, service_state

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pipeline_run: PipelineRun, tmp_path: Any) -> Iterator[TestClient]:
    home = tmp_path / "home"
    copy_home(pipeline_run.settings.home, home)
    settings = Settings(churnops_home=home, CHURNOPS_AUDIT_QUEUE_SIZE=200, CHURNOPS_AUDIT_FLUSH_MS=5)
    with TestClient(serving_app(settings), headers=all_scopes(settings)) as test_client:
        yield test_client


def test_database_and_spool_both_failing_refuse_predictions_with_503(
    client: TestClient, pipeline_run: PipelineRun
) -> None:
    """Faults that cannot be produced for real on a laptop: the database refuses every write and the
    spool's disk is full. Records pile up in memory up to the queue bound, then predictions get 503
    `audit_unavailable` and readiness turns false; once the database is back everything is stored."""
    state = service_state(client.app)
    writer = state.ledger
    real_append, real_spool = writer.store.append, writer.spool.append
    writer.store.append = _fail(OSError("database refuses writes"))
    writer.spool.append = _fail(OSError("No space left on device"))
    ids = list(pd.read_csv(pipeline_run.data)["customer_id"].head(400))
    statuses = [client.post("/v1/predict", json={"customer_id": c}).status_code for c in ids]
    assert 200 in statuses
    refused = [s for s in statuses if s != 200]
    assert refused
    assert set(refused) == {503}
    body = client.post("/v1/predict", json={"customer_id": ids[0]}).json()
    assert body["error"]["code"] == "audit_unavailable"
    assert client.get("/health/ready").status_code == 503
    assert 'audit_records_total{outcome="refused"}' in client.get("/metrics").text
    answered = statuses.count(200)
    writer.store.append, writer.spool.append = real_append, real_spool
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (writer.depth() or writer.spool.pending()):
        time.sleep(0.05)
    assert writer.depth() == 0
    assert client.get("/health/ready").status_code == 200
    with ledger_store(state.settings) as store:
        assert store.counts()["by_kind"]["prediction"] == answered  # every answered prediction, once


def _fail(err: Exception) -> Any:
    def raising(*args: Any, **kwargs: Any) -> Any:
        raise err

    return raising

"""`churnops serve` as a real process: blue/green swaps under load, multi-worker metrics, SIGTERM drain."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from churnops.core.bundle import ModelBundle
from churnops.io.pyfunc_model import load_bundle, save_bundle
from churnops.io.registry import MlflowRegistry
from churnops.jobs.evaluate import golden_requests
from churnops.jobs.train import load_candidate, load_training
from tests.conftest import PipelineRun
from tests.servers import ChurnopsServer, free_port, start_churnops, stop_churnops

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 8
PROMOTIONS = 5


@pytest.fixture(scope="module")
def versions(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelBundle]:
    """Two more registered versions that are genuinely different models (the pipeline's other two
    candidates, each with golden requests of its own), to promote back and forth."""
    registry = MlflowRegistry(pipeline_run.settings.tracking_uri, pipeline_run.settings.artifact_root)
    example = pd.read_csv(pipeline_run.data).head(3)
    chosen = load_bundle(pipeline_run.workdir.bundle)
    golden_rows = pd.DataFrame([case["features"] for case in chosen.metadata["golden"]])
    made = {"1": chosen}
    others = [name for name in load_training(pipeline_run.workdir)["candidates"] if name != chosen.candidate]
    for name in others:
        classifier = load_candidate(pipeline_run.workdir, name).classifier
        bundle = dataclasses.replace(
            chosen, classifier=classifier, candidate=name, metadata=dict(chosen.metadata)
        )
        bundle.metadata["golden"] = golden_requests(bundle, golden_rows)
        path = save_bundle(bundle, tmp_path_factory.mktemp("swap") / "bundle.pkl")
        with registry.run(f"swap-{name}", {}) as run_id:
            made[registry.log_model(run_id, path, "churn-synthetic", example, {})] = bundle
    return made


METRICS_PORT = free_port()


@pytest.fixture
def server(pipeline_run: PipelineRun, tmp_path: Path) -> Iterator[ChurnopsServer]:
    MlflowRegistry(pipeline_run.settings.tracking_uri, None).set_alias("churn-synthetic", "champion", "1")
    started = start_churnops(
        pipeline_run.settings.home,
        tmp_path / "serve.log",
        workers=2,
        env={
            "CHURNOPS_RELOAD_POLL_SECONDS": "0.5",
            "CHURNOPS_AUTH": "off",  # swaps and drain, not auth
            "CHURNOPS_METRICS_PORT": str(METRICS_PORT),
        },
    )
    yield started
    stop_churnops(started)
    MlflowRegistry(pipeline_run.settings.tracking_uri, None).set_alias("churn-synthetic", "champion", "1")


def test_promotions_under_load(
    server: ChurnopsServer, pipeline_run: PipelineRun, versions: dict[str, ModelBundle]
) -> None:
    """8 clients without pause while champion moves 5 times between three different models: no non-2xx,
    every answer from a champion, and every probability the one the version it names gives."""
    registry = MlflowRegistry(pipeline_run.settings.tracking_uri, None)
    raw = pd.read_csv(pipeline_run.data).head(500)
    ids = list(raw["customer_id"])
    order = list(versions)
    timeline: list[tuple[float, str]] = [(time.monotonic(), "1")]  # (time the alias moved, version)
    results: list[tuple[float, float, int, str | None, str, float | None]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            i = worker
            while not stop.is_set():
                started = time.monotonic()
                customer = ids[i % len(ids)]
                response = http.post("/v1/predict", json={"customer_id": customer})
                body = response.json() if response.status_code == 200 else {}
                version = body.get("model", {}).get("version")
                with lock:
                    results.append(
                        (
                            started,
                            time.monotonic(),
                            response.status_code,
                            version,
                            customer,
                            body.get("churn_probability"),
                        )
                    )
                i += CLIENTS

    threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for n in range(PROMOTIONS):
            time.sleep(1.5)
            target = order[(n + 1) % len(order)]
            registry.set_alias("churn-synthetic", "champion", target)
            timeline.append((time.monotonic(), target))
            wait_for_version(server, target)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert len(results) > 500
    failures = [r for r in results if r[2] != 200]
    assert failures == []
    # The server follows the registry by polling: a response may name the version that was champion up
    # to one swap delay (<= 5 s) before it started, never one that was not champion in that window.
    for started, finished, _, version, _, _ in results:
        window = [v for t, v in champions_between(timeline, started - 5.0, finished)]
        assert version in window, (started, finished, version, timeline)
    # Each version scores every customer its own way (they are different models) ...
    expected = {v: dict(zip(ids, bundle.predict_proba(raw), strict=True)) for v, bundle in versions.items()}
    spread = max(abs(expected["1"][c] - expected[v][c]) for v in order[1:] for c in ids)
    assert spread > 0.05
    # ... and each answer's probability is the one its named version gives.
    assert {version for *_, version, _, _ in results} == set(order)
    wrong = [r for r in results if abs(r[5] - expected[r[3]][r[4]]) > 1e-6]
    assert wrong == [], wrong[:5]


def champions_between(timeline: list[tuple[float, str]], start: float, end: float) -> list[tuple[float, str]]:
    """Versions that held the champion alias at some instant of [start, end]."""
    held = []
    for i, (moved, version) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else float("inf")
        if moved <= end and until >= start:
            held.append((moved, version))
    return held


def wait_for_version(server: ChurnopsServer, version: str, timeout: float = 5.0) -> None:
    """Every worker serves `version` within the 5 s bound (asked several times: workers differ)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        seen = httpx.get(f"{server.url}/v1/models", timeout=5).json()["champion"]
        streak = streak + 1 if seen == version else 0
        if streak >= 6:
            return
        time.sleep(0.05)
    raise AssertionError(f"server still not on v{version} after {timeout} s")


def test_metrics_sum_over_workers_on_their_own_port(
    server: ChurnopsServer, pipeline_run: PipelineRun
) -> None:
    """CHURNOPS_METRICS_PORT: the sum of both workers there, and nothing on the API's port."""
    ids = list(pd.read_csv(pipeline_run.data)["customer_id"].head(100))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for cid in ids:
            assert http.post("/v1/predict", json={"customer_id": cid}).status_code == 200
        time.sleep(2.5)  # every worker publishes its counters once a second
        moved = http.get("/metrics")
    assert moved.status_code == 404
    assert f"port {METRICS_PORT}" in moved.json()["error"]["message"]
    scrape = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10)
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert httpx.get(f"http://127.0.0.1:{METRICS_PORT}/v1/models", timeout=10).status_code == 404
    text = scrape.text
    total = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("predictions_total{") and 'outcome="ok"' in line
    )
    assert total == len(ids)


def test_sigterm_drains_in_flight_requests(server: ChurnopsServer, pipeline_run: PipelineRun) -> None:
    ids = list(pd.read_csv(pipeline_run.data)["customer_id"].head(4000))
    extra = {"contract": "One year", "support_calls": 3, "region": "Atlantis"}  # more work per instance
    payload = {"instances": [{"customer_id": cid, "features": extra} for cid in (ids * 3)[:10_000]]}
    outcome: dict[str, object] = {}

    def big_batch() -> None:
        try:
            response = httpx.post(f"{server.url}/v1/predict/batch", json=payload, timeout=60)
            outcome["status"] = response.status_code
            outcome["count"] = len(response.json()["predictions"])
        except httpx.HTTPError as err:
            outcome["error"] = repr(err)

    thread = threading.Thread(target=big_batch)
    thread.start()
    time.sleep(0.1)  # the batch is being sent or scored
    os.killpg(server.proc.pid, signal.SIGTERM)
    thread.join(timeout=60)
    assert outcome.get("status") == 200, outcome
    assert outcome["count"] == 10_000
    assert server.proc.wait(timeout=40) == 0

"""The lifecycle story end to end, on embedded stores and on PostgreSQL + Redis, with real processes:

v1 serves under load -> `price_increase` traffic -> drift alert -> the loop retrains on the new data
-> v2 passes its gates -> the swap under load (0 failed requests, every probability the one of the
version it names) -> v2's bake passes -> a label-shuffled candidate is refused by the discrimination
gate -> it is forced in -> its bake rolls it back on its own -> `models history` shows every step.

v1 is trained on a first extract of 3,000 customers: a retraining on 20,000 price-increase rows is
then significantly better. (On 20,000 clean rows v1 is as good, and the gate rightly refuses the
retrained model: a covariate shift alone does not make the old model worse.)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from churnops.core.bundle import ModelBundle
from churnops.io.datasets import load_spec, write_table
from churnops.io.registry import MlflowRegistry
from churnops.settings import Settings
from tests.access_helpers import all_scopes
from tests.lifecycle_helpers import cli, customers, history, train, write_params
from tests.pg import throwaway_database
from tests.servers import RedisServer, start_churnops, stop_churnops

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "churn-synthetic"
CLIENTS = 4


@dataclass
class Load:
    """Clients posting price-increase customers (features in the request) without pause."""

    url: str
    requests: list[dict]
    headers: dict[str, str]
    results: list[tuple[int, int, str | None, float | None]] = field(
        default_factory=list
    )  # (row, status, v, p)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def _client(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, headers=self.headers) as http:
            i = worker
            while not self.stop.is_set():
                row = i % len(self.requests)
                response = http.post("/v1/predict", json=self.requests[row])
                body = response.json() if response.status_code == 200 else {}
                with self.lock:
                    self.results.append(
                        (
                            row,
                            response.status_code,
                            body.get("model", {}).get("version"),
                            body.get("churn_probability"),
                        )
                    )
                i += CLIENTS
                time.sleep(0.005)

    def count(self, version: str) -> int:
        with self.lock:
            return sum(1 for _, status, v, _ in self.results if status == 200 and v == version)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.fixture(params=["embedded", "postgres+redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "embedded":
        yield {}
        return
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with throwaway_database() as url:
            yield {"DATABASE_URL": url, "REDIS_URL": redis.url}
    finally:
        redis.stop()


def wait_for(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def run(home: Path, env: dict[str, str], *args: str) -> str:
    out = cli(home, *args, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_lifecycle_story(tmp_path: Path, stores: dict[str, str]) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    home, incoming = tmp_path / "home", tmp_path / "incoming"
    incoming.mkdir()
    settings = Settings(
        churnops_home=home,
        mlflow_tracking_uri=None,
        model_name=None,
        database_url=stores.get("DATABASE_URL"),
        redis_url=stores.get("REDIS_URL"),
    )
    first = train(settings, customers(3000, seed=1), tmp_path, "v1")
    assert first["status"] == "champion", first["reason"]
    params = write_params(
        tmp_path / "params.yaml",
        lifecycle={
            "new_data": {"glob": str(incoming / "*.csv"), "settle": "0s"},
            "drift": {"window": "1h", "min_predictions": 500},
            "bake": {"duration": "5s", "min_predictions": 100, "max_latency_p95_ms": 1000},
        },
    )
    headers = all_scopes(settings)  # the service runs with access control on, as in production
    server = start_churnops(home, tmp_path / "serve.log", workers=2, env=stores)
    env = {**stores, "CHURNOPS_PORT": server.url.rsplit(":", 1)[1]}
    spec = load_spec("synthetic")
    traffic = customers(2000, seed=5, prefix="T", drift="price_increase")
    requests = [
        {
            "customer_id": row["customer_id"],
            "features": {c: None if pd.isna(row[c]) else row[c] for c in spec.feature_columns},
        }
        for row in traffic.to_dict(orient="records")
    ]
    load = Load(server.url, requests, headers)
    load.start()
    try:
        timings["setup"] = time.monotonic() - started
        wait_for(lambda: load.count("1") >= 700, 120, "700 predictions of v1")
        time.sleep(1.0)  # the ledger writer flushes (async durability: within 100 ms)

        # Drift alert + the new labelled data: the loop retrains, v2 passes, serving swaps under load.
        write_table(customers(20000, seed=2, prefix="N", drift="price_increase"), incoming / "2026-12.csv")
        mark = time.monotonic()
        cycle = run(home, env, "lifecycle", "run", "--params", str(params))
        timings["retrain cycle"] = time.monotonic() - mark
        assert cycle.startswith("cycle promoted (v2)"), cycle
        events = history(home, env)
        assert events[0]["to"] == "2"
        assert events[0]["trigger"] == "lifecycle:new_data,drift"
        wait_for(lambda: load.count("2") >= 150, 60, "v2 serving")

        # v2 bakes and passes.
        def bake_done() -> bool:
            return "bake of v2 passed" in run(home, env, "lifecycle", "run", "--params", str(params))

        wait_for(bake_done, 90, "v2's bake passed")

        # A label-shuffled candidate is refused by the discrimination gate.
        shuffled = customers(20000, seed=3, prefix="S", drift="price_increase", shuffle=True)
        write_table(shuffled, incoming / "2027-01.csv")
        refused = run(home, env, "lifecycle", "run", "--params", str(params))
        assert refused.startswith("cycle rejected (v3): v3 refused: gate discrimination failed"), refused

        # Forced in anyway, its bake rolls it back on its own.
        run(home, env, "models", "promote", "3", "--force")
        wait_for(lambda: load.count("3") >= 150, 60, "v3 serving")
        mark = time.monotonic()

        def rolled_back() -> bool:
            return run(home, env, "lifecycle", "run", "--params", str(params)).startswith(
                "cycle rolled_back (v3)"
            )

        wait_for(rolled_back, 120, "the bake rolled v3 back")
        wait_for(
            lambda: httpx.get(f"{server.url}/v1/models", headers=headers).json()["champion"] == "2",
            5,
            "serving back on v2",
        )
        timings["forced -> rolled back"] = time.monotonic() - mark
        served_again = load.count("2")
        wait_for(lambda: load.count("2") > served_again + 50, 30, "v2 serving again")
    finally:
        load.finish()
        stop_churnops(server)

    failures = [r for r in load.results if r[1] != 200]
    assert failures == [], failures[:5]
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    frame = pd.DataFrame([r["features"] for r in requests])
    expected: dict[str, list[float]] = {}
    for version in ("1", "2", "3"):
        bundle: ModelBundle = registry.load_bundle(MODEL, version)
        expected[version] = list(bundle.predict_proba(frame))
    assert {v for _, _, v, _ in load.results} == {"1", "2", "3"}
    wrong = [r for r in load.results if abs(r[3] - expected[r[2]][r[0]]) > 1e-6]
    assert wrong == [], wrong[:5]

    steps = [(e["action"], e["from"], e["to"], e["outcome"], e["trigger"]) for e in history(home, env)]
    assert steps == [
        ("models.rollback", "3", "2", "champion", "bake"),
        ("models.promote", "2", "3", "champion", "manual"),
        ("models.reject", "2", "3", "rejected", "lifecycle:new_data"),
        ("models.register", "1", "2", "champion", "lifecycle:new_data,drift"),
        ("models.register", None, "1", "champion", "pipeline"),
    ]
    events = history(home, env)
    assert events[0]["reason"].startswith("rolled back from v3 to v2: bake breach: ")
    assert "estimated AUC" in events[0]["reason"]
    assert "discrimination" in events[1]["override"]["failed_gates"]
    assert events[2]["reason"].startswith("v3 refused: gate discrimination failed")
    drift = next(t for t in events[3]["gates"]["verdicts"] if t["name"] == "discrimination")
    assert drift["passed"] is True
    timings["total"] = time.monotonic() - started
    print(
        f"\nlifecycle story ({'postgres+redis' if stores else 'embedded'}): "
        f"{len(load.results)} requests, 0 failed; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    )
    assert os.environ.get("CHURNOPS_HOME") != str(home)  # the story ran in its own home

"""Serving benchmark, one run on this machine: churnops vs `mlflow models serve` vs a bare ASGI ceiling.

Each server is pinned to core 0 (`taskset -c 0`, one worker); wrk, Redis and PostgreSQL to core 1.
Prepares a registered LightGBM champion on synthetic data in a throwaway
CHURNOPS_HOME, then measures at 16 and 64 connections:
  1. bare ASGI under uvicorn (uvloop + httptools) returning a fixed JSON body;
  2. churnops /v1/predict for random known customers (online-store features, reason codes, metrics on);
  3. `mlflow models serve` of the very same model version, one-row dataframe_split bodies.
Then the hot-path layers against an all-off baseline of the same run, c=16, each layer in pairs of
runs back to back with its baseline (3 pairs by default: bench/hot_path.py says how), each ratio of
sums over the pairs with its per-pair range: monitoring (floor 0.9x), a 5-arm experiment (0.9x)
and 2 shadows beside it, the ledger on PostgreSQL (async 0.85x; sync reported), and access
control against a baseline with features on a throwaway Redis: an API key with the Redis rate
limit on (a key whose limit does not refuse, floor 0.8x), a JWT (0.75x), a signed key (a fresh
X-Signature per request; reported).
Then the batch figure: `churnops score` on 1,000,000 rows against LightGBM's own
`predict` on the ready numpy matrix (the floor).

Usage: python bench/bench_serve.py [--duration 10] [--rounds 3] [--skip-batch | --batch-only | --layers-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
from harness import (
    BIN,
    bench_database,
    drop_database,
    ensure_wrk,
    env_for,
    free_port,
    get_script,
    lua_script,
    run_wrk,
    start,
    stop,
)
from hot_path import hot_path_layers

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = (16, 64)

PARAMS = """
training:
  candidates:
    - name: lightgbm
      kind: lightgbm
      params: {n_estimators: 2000, learning_rate: 0.05, num_leaves: 31, min_child_samples: 40}
      early_stopping_rounds: 50
  search: {enabled: false}
evaluation: {cv_folds: 0}
"""


def prepare(tmp: Path, rows: int, pg_url: str | None = None) -> tuple[Path, Path, pd.DataFrame]:
    from churnops.core.synthetic import generate_customers

    home = tmp / "home"
    data = tmp / "customers.csv"
    frame = generate_customers(rows, seed=42)
    frame.to_csv(data, index=False)
    (tmp / "params.yaml").write_text(PARAMS)
    cmd = [
        str(BIN / "churnops"),
        "pipeline",
        "run",
        "--data",
        str(data),
        "--params",
        str(tmp / "params.yaml"),
    ]
    env = env_for(home) | ({"DATABASE_URL": pg_url} if pg_url else {})
    subprocess.run(cmd, env=env, check=True, timeout=900)
    if pg_url:  # every server of this run reads its features from the same store
        os.environ["DATABASE_URL"] = pg_url
    return home, data, frame


def measure(name: str, wrk: str, url: str, script: Path, duration: int) -> dict[int, dict[str, float]]:
    results = {}
    for connections in CONNECTIONS:
        stats = run_wrk(wrk, url, script, connections, duration)
        results[connections] = stats
        print(
            f"{name:22} c={connections:<3} {stats['rps']:9,.0f} req/s  p50 {stats['p50_us'] / 1e3:6.2f} ms  "
            f"p95 {stats['p95_us'] / 1e3:6.2f} ms  p99 {stats['p99_us'] / 1e3:6.2f} ms  "
            f"non-2xx {stats['non2xx']}  socket errors {stats['socket_errors']}",
            flush=True,
        )
    return results


def _clean(values: dict[str, object]) -> dict[str, object]:
    """JSON has no NaN: a missing value is null."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in values.items()}


def serving(tmp: Path, home: Path, frame: pd.DataFrame, wrk: str, duration: int) -> None:
    env = env_for(home)
    rng = random.Random(0)
    ids = rng.sample(list(frame["customer_id"]), 2000)
    features = frame.drop(columns=["customer_id", "churn", "true_churn_probability"])
    rows = features.sample(500, random_state=0)
    mlflow_bodies = [
        json.dumps({"dataframe_split": {"columns": list(rows.columns), "data": [list(r)]}}, default=float)
        for r in rows.astype(object).itertuples(index=False)
    ]
    churnops_script = lua_script(tmp / "churnops.lua", [json.dumps({"customer_id": c}) for c in ids])
    # Like for like with mlflow: the same 16 columns in the body, for ids the store does not know.
    full_bodies = [
        json.dumps(
            {"customer_id": f"bench-{i}", "features": _clean(dict(zip(rows.columns, r, strict=True)))},
            default=float,
        )
        for i, r in enumerate(rows.astype(object).itertuples(index=False))
    ]
    full_script = lua_script(tmp / "churnops_full.lua", full_bodies)
    mlflow_script = lua_script(tmp / "mlflow.lua", mlflow_bodies)
    results = {}

    port = free_port()
    cmd = [
        str(BIN / "uvicorn"),
        "bare_asgi:app",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--app-dir",
        str(REPO / "bench"),
    ]
    proc = start(cmd, env, f"http://127.0.0.1:{port}/", tmp / "bare.log")
    try:
        results["bare"] = measure(
            "bare ASGI (ceiling)", wrk, f"http://127.0.0.1:{port}/", get_script(tmp / "g.lua"), duration
        )
    finally:
        stop(proc)

    port = free_port()
    cmd = [str(BIN / "churnops"), "serve", "--port", str(port), "--workers", "1"]
    proc = start(cmd, env, f"http://127.0.0.1:{port}/health/ready", tmp / "churnops.log")
    try:
        results["churnops"] = measure(
            "churnops /v1/predict", wrk, f"http://127.0.0.1:{port}/v1/predict", churnops_script, duration
        )
        check = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"customer_id": ids[0]}).json()
        print(f"  sample response: reasons={check['reasons']}, source={check['feature_source']}")
        results["churnops_full"] = measure(
            "churnops, 16 cols in body", wrk, f"http://127.0.0.1:{port}/v1/predict", full_script, duration
        )
        check = httpx.post(f"http://127.0.0.1:{port}/v1/predict", content=full_bodies[0]).json()
        assert check["feature_source"] == "request", check
    finally:
        stop(proc)

    port = free_port()
    env_mlflow = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    cmd = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/churn-synthetic@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start(cmd, env_mlflow, f"http://127.0.0.1:{port}/ping", tmp / "mlflow.log")
    try:
        results["mlflow"] = measure(
            "mlflow models serve", wrk, f"http://127.0.0.1:{port}/invocations", mlflow_script, duration
        )
    finally:
        stop(proc)

    print()
    for c in CONNECTIONS:
        ours, theirs, ceiling = (results[k][c]["rps"] for k in ("churnops", "mlflow", "bare"))
        full = results["churnops_full"][c]["rps"]
        print(
            f"c={c:<3} churnops/mlflow {ours / theirs:6.1f}x   like for like (16 columns in the body) "
            f"{full / theirs:6.1f}x   churnops/ceiling {ours / ceiling:5.2f}"
        )


# -- hot-path layers: each one on vs everything off, in the same run -------------------------


def batch_isolation(tmp: Path, home: Path, ids: list[str], seconds: float = 8.0) -> None:
    """p99 of single predictions alone, then while 10,000-instance batches run back to back."""
    import threading

    port = free_port()
    cmd = [str(BIN / "churnops"), "serve", "--port", str(port), "--workers", "1"]
    proc = start(cmd, env_for(home), f"http://127.0.0.1:{port}/health/live", tmp / "isolation.log")
    url = f"http://127.0.0.1:{port}"
    batch = {"instances": [{"customer_id": ids[i % len(ids)]} for i in range(10_000)]}

    def singles(until: float, out: list[float]) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            i = 0
            while time.monotonic() < until:
                started = time.perf_counter()
                assert client.post("/v1/predict", json={"customer_id": ids[i % len(ids)]}).status_code == 200
                out.append(time.perf_counter() - started)
                i += 1

    def batches(until: float, count: list[int]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < until:
                assert client.post("/v1/predict/batch", json=batch).status_code == 200
                count[0] += 1

    def run(with_batches: bool) -> tuple[float, float, int]:
        until = time.monotonic() + seconds
        latencies: list[list[float]] = [[] for _ in range(4)]
        done = [0]
        threads = [threading.Thread(target=singles, args=(until, lat)) for lat in latencies]
        if with_batches:
            threads.append(threading.Thread(target=batches, args=(until, done)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        flat = sorted(x for lat in latencies for x in lat)
        return flat[len(flat) // 2] * 1e3, flat[int(len(flat) * 0.99)] * 1e3, done[0]

    try:
        alone = run(False)
        beside = run(True)
    finally:
        stop(proc)
    print("\nbatch isolation: 4 clients of single predictions, alone and beside 10,000-instance batches")
    print(f"  singles alone                      p50 {alone[0]:6.2f} ms  p99 {alone[1]:7.2f} ms")
    print(
        f"  singles beside {beside[2]:3d} batches of 10k   p50 {beside[0]:6.2f} ms  p99 {beside[1]:7.2f} ms"
    )


def batch(tmp: Path, home: Path, rows: int) -> None:
    import numpy as np

    from churnops.core.synthetic import generate_customers
    from churnops.io.registry import MlflowRegistry
    from churnops.jobs.score import load_scoring_model, score_file
    from churnops.settings import Settings

    data, out = tmp / "batch.parquet", tmp / "scored.parquet"
    generate_customers(rows, seed=7).drop(columns=["churn", "true_churn_probability"]).to_parquet(
        data, index=False
    )
    registry = MlflowRegistry(f"sqlite:///{home / 'mlflow.db'}", None)
    bundle = registry.load_bundle("churn-synthetic", "champion")
    matrix = bundle.transformer.transform(pd.read_parquet(data))
    booster = bundle.classifier.booster  # type: ignore[attr-defined]
    floors = []
    for _ in range(3):
        started = time.perf_counter()
        booster.predict(matrix, num_iteration=bundle.classifier.best_iteration)  # type: ignore[attr-defined]
        floors.append(time.perf_counter() - started)
    floor = min(floors)
    del matrix
    settings = Settings(churnops_home=home, mlflow_tracking_uri=None)
    work = score_file(load_scoring_model(settings, None, "champion"), data, out)["seconds"]
    cmd = [str(BIN / "churnops"), "score", "--data", str(data), "--out", str(out)]
    env = env_for(home) | {"NUMBA_NUM_THREADS": str(os.cpu_count() or 1), "OMP_NUM_THREADS": "2"}

    def command() -> float:
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=900, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    warm = min(command() for _ in range(3))
    shutil.rmtree(home / "cache" / "compiled")  # as if the model had been registered elsewhere
    cold = command()
    scored = pd.read_parquet(out)
    assert len(scored) == rows
    assert np.isfinite(scored["churn_probability"]).all()
    print(f"\nbatch {rows:,} rows, Parquet in and out, 2 cores ({bundle.classifier.best_iteration} trees)")  # type: ignore[attr-defined]
    print(f"  floor: booster.predict on a ready matrix      {rows / floor:10,.0f} rows/s ({floor:.2f} s)")
    print(
        f"  churnops score, the scoring work (in process) {rows / work:10,.0f} rows/s = {floor / work:.0%} "
        f"of the floor (read, conform, transform, score, reasons, write: {work:.2f} s)"
    )
    print(
        f"  churnops score, whole command                 {rows / warm:10,.0f} rows/s = {floor / warm:.0%} "
        f"of the floor ({warm:.2f} s incl. interpreter, imports, registry lookup, cached compiled model)"
    )
    print(
        f"  churnops score, whole command, cache emptied  {rows / cold:10,.0f} rows/s = {floor / cold:.0%} "
        f"of the floor ({cold:.2f} s: + MLflow import, artifact download, compile)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs per hot-path layer")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--batch-only", action="store_true")
    parser.add_argument("--layers-only", action="store_true", help="only the hot-path layer ratios")
    parser.add_argument("--access-only", action="store_true", help="only the access-control layer rows")
    args = parser.parse_args()
    wrk = ensure_wrk()
    pg_url = None if args.batch_only else bench_database()
    try:
        with tempfile.TemporaryDirectory() as directory:
            tmp = Path(directory)
            home, _, frame = prepare(tmp, args.rows, pg_url)
            ids = random.Random(0).sample(list(frame["customer_id"]), 2000)
            if not (args.batch_only or args.layers_only or args.access_only):
                serving(tmp, home, frame, wrk, args.duration)
            if not args.batch_only:
                hot_path_layers(tmp, home, ids, wrk, args.duration, pg_url, args.access_only, args.rounds)
                if not args.access_only:
                    batch_isolation(tmp, home, ids)
            if not (args.skip_batch or args.layers_only or args.access_only):
                batch(tmp, home, args.batch_rows)
    finally:
        drop_database(pg_url)


if __name__ == "__main__":
    main()

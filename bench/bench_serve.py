"""Serving benchmark, one run on this machine: churnops vs `mlflow models serve` vs a bare ASGI ceiling.

Each server is pinned to core 0 (`taskset -c 0`, one worker); wrk, Redis and PostgreSQL to core 1.
Prepares a registered LightGBM champion on synthetic data in a throwaway
CHURNOPS_HOME, then measures at 16 and 64 connections:
  1. bare ASGI under uvicorn (uvloop + httptools) returning a fixed JSON body;
  2. churnops /v1/predict for random known customers (online-store features, reason codes, metrics on);
  3. `mlflow models serve` of the very same model version, one-row dataframe_split bodies.
Then the hot-path layers against an all-off baseline of the same run, c=16, in rounds (baseline,
layer 1, ..., layer n; 3 rounds by default), each ratio of sums over the rounds with its per-round
range: monitoring (floor 0.9x), a 5-arm experiment (0.9x) and 2 shadows beside it, the ledger on
PostgreSQL (async 0.85x; sync reported), and access control against a baseline with features on
a throwaway Redis: an API key with the Redis rate limit on (a key whose limit does not refuse,
floor 0.8x), a JWT (0.75x), a signed key (a fresh X-Signature per request; reported).
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
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

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=300)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    if "DATABASE_URL" in os.environ:  # set by prepare() for this run's PostgreSQL store
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    env |= {"CHURNOPS_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env |= {"CHURNOPS_AUTH": "off", "CHURNOPS_AUDIT": "off"}  # the comparison rows: no layer on
    env |= {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return env


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


def start(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", "0", *cmd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(ready_url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def lua_script(path: Path, bodies: list[str], headers: dict[str, str] | None = None) -> Path:
    quoted = ",\n".join(json.dumps(b) for b in bodies)
    extra = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in (headers or {}).items())
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + extra
        + f"local bodies = {{\n{quoted}\n}}\nlocal n = #bodies\n"
        "request = function()\n  return wrk.format(nil, nil, nil, bodies[math.random(n)])\nend\n" + LUA_DONE
    )
    return path


def get_script(path: Path) -> Path:
    path.write_text(LUA_DONE)
    return path


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, duration: int, warm_script: Path | None = None
) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", wrk, "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
    warm = [
        "taskset",
        "-c",
        "1",
        wrk,
        "-t1",
        f"-c{connections}",
        "-d2s",
        "-s",
        str(warm_script or script),
        url,
    ]
    subprocess.run(warm, capture_output=True, text=True, timeout=60, check=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    stats = json.loads(next(line for line in out.splitlines() if line.startswith("JSON "))[5:])
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


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

OFF = {"CHURNOPS_AUTH": "off", "CHURNOPS_AUDIT": "off", "CHURNOPS_MONITORING": "off"}
BASELINE = "baseline: every layer off"
REDIS_BASELINE = "baseline, features on Redis: all off"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Layer:
    """One configuration of /v1/predict, measured between two runs of its group's baseline (the first)."""

    name: str
    env: dict[str, str]
    floor: float | None  # the minimum ratio to the baseline (None: reported only)
    headers: dict[str, str] = field(default_factory=dict)
    experiment: str | None = None  # a YAML definition running while this layer is measured
    script: Callable[[int, str], Path] | None = None  # one-use requests: (connections, phase) -> script


FIVE_ARMS = """name: bench-five-arms
arms:
  - {name: control, version: "1", weight: 40, control: true}
  - {name: a, version: "1", weight: 15}
  - {name: b, version: "1", weight: 15}
  - {name: c, version: "1", weight: 15}
  - {name: d, version: "1", weight: 15}
"""
TWO_SHADOWS = (
    FIVE_ARMS.replace("bench-five-arms", "bench-shadows")
    + """shadows:
  - {name: s1, version: "1", sample: 1.0}
  - {name: s2, version: "1", sample: 1.0}
"""
)


def layers(pg_url: str | None) -> list[Layer]:
    found = [
        Layer(BASELINE, OFF, None),
        Layer("monitoring on (drift + cost accounting)", OFF | {"CHURNOPS_MONITORING": "on"}, 0.9),
        Layer("5-arm experiment", OFF, 0.9, experiment=FIVE_ARMS),
        Layer("5-arm experiment + 2 shadows at 100%", OFF, None, experiment=TWO_SHADOWS),
    ]
    if pg_url is not None:
        ledger = OFF | {"CHURNOPS_AUDIT": "on", "DATABASE_URL": pg_url}
        found += [
            Layer("ledger on (async, PostgreSQL)", ledger, 0.85),
            Layer("ledger on (sync, PostgreSQL)", ledger | {"CHURNOPS_AUDIT_DURABILITY": "sync"}, None),
        ]
    return found


def hot_path_layers(
    tmp: Path,
    home: Path,
    ids: list[str],
    wrk: str,
    duration: int,
    pg_url: str | None,
    access_only: bool = False,
    rounds: int = 3,
) -> None:
    """/v1/predict with one layer on at a time (c=16, one core) against its group's baseline (all
    off; features on Redis for the access-control rows), in `rounds` rounds of baseline, layer 1,
    ..., layer n: a layer's ratio is its requests over the baseline's summed over the rounds, so
    neither a host that drifts during the run nor one noisy run decides it (single runs of the
    same configuration differ by +-6% on these machines); the spread of the per-round ratios is
    printed beside it."""
    print(
        f"\nhot-path layers: /v1/predict, c=16, one core; {rounds} rounds of {duration} s, "
        "ratio of sums to the baseline (per-round range)"
    )
    redis_proc, redis_url = start_redis(tmp)
    try:
        groups = [] if access_only else [layers(pg_url)]
        groups.append(access_layers(tmp, home, ids, duration, redis_url))
        for found in groups:
            measure_layer(tmp, home, ids, wrk, 3, found[0])  # warm-up: caches, page cache, numba
            runs: dict[str, list[dict[str, float]]] = {layer.name: [] for layer in found}
            notes: dict[str, list[str]] = {layer.name: [] for layer in found}
            for round_ in range(rounds):
                for layer in found:
                    stats, note = measure_layer(tmp, home, ids, wrk, duration, layer, round_)
                    runs[layer.name].append(stats)
                    if note is not None:
                        notes[layer.name].append(note)
            baseline = runs[found[0].name]
            for layer in found:
                _print_layer(layer, runs[layer.name], baseline)
                for note in notes[layer.name][-1:]:  # the last round's cost or rate-limit counts
                    print(f"    {note}", flush=True)
    finally:
        os.killpg(redis_proc.pid, signal.SIGTERM)
        redis_proc.wait(timeout=10)


def measure_layer(
    tmp: Path, home: Path, ids: list[str], wrk: str, duration: int, layer: Layer, round_: int = 0
) -> tuple[dict[str, float], str | None]:
    body = [json.dumps({"customer_id": c}) for c in ids]
    script = lua_script(tmp / "layer.lua", body, layer.headers)
    main, warm = (layer.script(16, "run"), layer.script(16, "warm")) if layer.script else (script, script)
    port = free_port()
    cmd = [str(BIN / "churnops"), "serve", "--port", str(port), "--workers", "1"]
    env = env_for(home) | layer.env
    definition = layer.experiment
    if definition is not None:  # a stopped experiment's name is never reused: one per run
        definition = definition.replace("name: bench-", f"name: bench-{round_}-{time.monotonic_ns()}-", 1)
    experiment = start_experiment(tmp, env, definition) if definition else None
    proc = start(cmd, env, f"http://127.0.0.1:{port}/health/live", tmp / "layer.log")
    note = None
    try:
        if layer.env.get("CHURNOPS_AUTH") == "on":
            check_access(f"http://127.0.0.1:{port}", layer, body[0])
        stats = run_wrk(wrk, f"http://127.0.0.1:{port}/v1/predict", main, 16, duration, warm)
        if layer.env.get("CHURNOPS_MONITORING") == "on":
            note = measured_cost(port, duration)
        if layer.env.get("CHURNOPS_AUDIT") == "on":
            note = ledger_cost(port)
        if layer.env.get("CHURNOPS_AUTH") == "on":
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            decisions = [line for line in metrics.splitlines() if line.startswith("rate_limit_decisions")]
            note = "; ".join(decisions) or "no rate-limit decisions"
        if experiment is not None:  # the layer really routed by the experiment
            check = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"customer_id": ids[0]}).json()
            assert check["model"]["variant"] in {"control", "a", "b", "c", "d"}, check
    finally:
        stop(proc)
        if experiment is not None:
            stop_experiment(env, experiment)
    return stats, note


def _print_layer(layer: Layer, runs: list[dict[str, float]], baseline: list[dict[str, float]]) -> None:
    rps = sum(r["rps"] for r in runs) / len(runs)
    ratio = sum(r["rps"] for r in runs) / sum(r["rps"] for r in baseline)
    per_round = [r["rps"] / b["rps"] for r, b in zip(runs, baseline, strict=True)]
    verdict = "" if layer.floor is None else (" ok" if ratio >= layer.floor else " BELOW FLOOR")
    floor = f"(floor {layer.floor:.2f}x)" if layer.floor is not None else ""
    spread = f"[{min(per_round):.2f}-{max(per_round):.2f}]" if runs is not baseline else ""
    p99 = max(r["p99_us"] for r in runs) / 1e3
    non2xx = sum(int(r["non2xx"]) for r in runs)
    print(
        f"  {layer.name:42} {rps:8,.0f} req/s  {ratio:5.2f}x {spread:11} {floor}{verdict}  "
        f"p99 {p99:6.2f} ms (worst round)  non-2xx {non2xx}",
        flush=True,
    )


def measured_cost(port: int, duration: int) -> str:
    """The service's own cost figure for the run just measured (after its next flush)."""
    time.sleep(6.0)  # one flush interval (5 s) and a margin
    window = f"{duration + 30}s"
    body = httpx.get(f"http://127.0.0.1:{port}/v1/monitoring/cost?window={window}", timeout=30).json()
    champion = next((v for v in body.get("variants", []) if v["variant"] == "champion"), None)
    if champion is None or champion.get("per_1000_usd") is None:
        return f"cost: {body.get('message')}"
    return (
        f"measured cost: ${champion['per_1000_usd']:.6f} per 1,000 predictions "
        f"({champion['predictions']:,} predictions, {champion['cpu_seconds']:.1f} CPU s; "
        "seed: $0.024 per 1,000; prices of params.yaml)"
    )


def ledger_cost(port: int) -> str:
    """What the ledger cost the serving core, from the service's own counters (after the next refresh)."""
    time.sleep(1.5)  # the metrics snapshot is refreshed once a second
    values: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("audit_") and not name.startswith("#"):
            values[name] = float(value)
    sealed, stored = values.get("audit_seal_seconds_count", 0), values.get("audit_write_seconds_count", 0)
    if not sealed or not stored:
        return "ledger: no records sealed"
    per_record = values["audit_seal_seconds_sum"] / sealed * 1e6
    per_batch = values["audit_write_seconds_sum"] / stored * 1e3
    written = values.get('audit_records_total{outcome="written"}', 0.0)
    fresh = values.get("audit_vectors_sealed_total", 0.0)
    return (
        f"ledger: sealing {per_record:.1f} us per record on the serving core (audit_seal_seconds), "
        f"{fresh:,.0f} of {sealed:,.0f} vectors encrypted afresh; "
        f"{written:,.0f} records stored in {stored:,.0f} batches, {per_batch:.1f} ms each (wall, in a thread)"
    )


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


def start_experiment(tmp: Path, env: dict[str, str], definition: str) -> str:
    """Create the layer's experiment in the run's store (the server loads it at start-up)."""
    path = tmp / "experiment.yaml"
    path.write_text(definition)
    cmd = [str(BIN / "churnops"), "experiments", "create", "--file", str(path)]
    subprocess.run(cmd, env=env, check=True, timeout=300, capture_output=True)
    return definition.split("\n", 1)[0].split(": ", 1)[1]


def stop_experiment(env: dict[str, str], name: str) -> None:
    cmd = [str(BIN / "churnops"), "experiments", "stop", name]
    subprocess.run(cmd, env=env, check=True, timeout=300, capture_output=True)


def check_access(url: str, layer: Layer, body: str) -> None:
    """The layer really is on: refused without credentials, answered with them (and limited)."""
    assert httpx.post(f"{url}/v1/predict", content=body).status_code == 401
    if layer.headers:
        response = httpx.post(f"{url}/v1/predict", content=body, headers=layer.headers)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-policy"] == '"key";q=1000000000;w=60'


# -- access control: against a baseline whose features are on the same Redis -------------------

JWT_ENV = {
    "JWT_SECRET_KEY": "bench-hs256-secret-of-at-least-32-bytes",
    "CHURNOPS_JWT_ISSUER": "https://bench.churnops",
    "CHURNOPS_JWT_AUDIENCE": "churnops",
    "CHURNOPS_RATE_LIMIT": "1000000000/minute",  # never refuses: JWT subjects use the default
}
FAST = "1000000000/minute"


def access_layers(tmp: Path, home: Path, ids: list[str], duration: int, redis_url: str) -> list[Layer]:
    """Auth off / API key / JWT / signed key, all with the features and the rate limit on one Redis."""
    import jwt as pyjwt

    from churnops.jobs.keys import create_key
    from churnops.settings import Settings

    env = env_for(home) | {"REDIS_URL": redis_url}
    subprocess.run([str(BIN / "churnops"), "features", "materialize"], env=env, check=True, timeout=600)
    settings = Settings(churnops_home=home)  # DATABASE_URL from the environment: the servers' store
    key = create_key(settings, name="bench", scopes="predict", rate_limit=FAST)
    signed = create_key(settings, name="bench-signed", scopes="predict", rate_limit=FAST, signed=True)
    claims = {"sub": "bench", "iss": JWT_ENV["CHURNOPS_JWT_ISSUER"], "aud": "churnops", "scope": "predict"}
    token = pyjwt.encode(claims | {"exp": int(time.time()) + 3600}, JWT_ENV["JWT_SECRET_KEY"], "HS256")
    assert signed.signing_secret is not None
    on = OFF | {"CHURNOPS_AUTH": "on", "REDIS_URL": redis_url} | JWT_ENV  # only access control differs
    return [
        Layer(REDIS_BASELINE, OFF | {"REDIS_URL": redis_url}, None),
        Layer("API key + Redis rate limit", on, 0.8, {"X-API-Key": key.key}),
        Layer("JWT (HS256) + Redis rate limit", on, 0.75, {"Authorization": f"Bearer {token}"}),
        Layer(
            "signed key + Redis rate limit",
            on,
            None,
            script=signed_scripts(tmp, signed.key, signed.signing_secret, ids, duration),
        ),
    ]


SIGNED_LUA = r"""
wrk.method = "POST"
local base = {["Content-Type"] = "application/json", ["X-API-Key"] = KEY}
local lines = {}
for line in io.lines(LINES) do lines[#lines + 1] = line end
local i = 0
request = function()
  i = i + 1
  local line = lines[i] or lines[#lines]
  local tab = string.find(line, "\t", 1, true)
  local headers = {}
  for k, v in pairs(base) do headers[k] = v end
  headers["X-Signature"] = string.sub(line, 1, tab - 1)
  return wrk.format(nil, nil, headers, string.sub(line, tab + 1))
end
"""


def signed_scripts(
    tmp: Path, key: str, secret: str, ids: list[str], duration: int
) -> Callable[[int, str], Path]:
    """wrk cannot compute HMACs: one file of precomputed (X-Signature, body) lines per run, each
    nonce used once (enough for 20,000 req/s); timestamps stay well inside the ±300 s window."""
    from churnops.client import sign_request

    rng = random.Random(1)

    def make(connections: int, phase: str) -> Path:
        count = 20_000 * (2 if phase == "warm" else duration) + 1000
        lines_path = tmp / f"signed-{connections}-{phase}.txt"
        with lines_path.open("w") as out:
            for _ in range(count):
                body = json.dumps({"customer_id": rng.choice(ids)})
                headers = sign_request("POST", "http://bench/v1/predict", body.encode(), key, secret)
                out.write(f"{headers['X-Signature']}\t{body}\n")
        script = tmp / f"signed-{connections}-{phase}.lua"
        script.write_text(
            f"KEY = {json.dumps(key)}\nLINES = {json.dumps(str(lines_path))}\n{SIGNED_LUA}{LUA_DONE}"
        )
        return script

    return make


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on core 1 (with wrk): the server under test keeps core 0 to itself."""
    import redis

    port = free_port()
    cmd = ["taskset", "-c", "1", shutil.which("redis-server") or "redis-server", "--port", str(port)]
    cmd += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=0.2) as client:
                client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    raise TimeoutError("redis-server did not start")


_PRIVATE_PG: list[Path] = []  # the data directory of the cluster this run started, to stop it


def bench_database() -> str | None:
    """PostgreSQL for the ledger rows: a private cluster of this run on core 1 (beside wrk and
    Redis: the server under test keeps core 0 to itself, as a database on its own host would
    leave it), else a throwaway database on the shared server at 127.0.0.1:5432, whose backends
    may then run on core 0 and cost the ledger layer their CPU too (said in the output)."""
    url = start_private_postgres()
    if url is not None:
        print(f"(PostgreSQL: a private cluster on core 1, {url.rsplit('@', 1)[1]})")
        return url
    import psycopg

    name = f"churnops_bench_{os.getpid()}"
    try:
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
        ) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as err:
        print(f"(no PostgreSQL on 127.0.0.1:5432: ledger rows skipped: {err})")
        return None
    print("(PostgreSQL: the shared server at 127.0.0.1:5432, not pinned: its CPU counts against core 0)")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def start_private_postgres() -> str | None:
    """initdb + pg_ctl start under `taskset -c 1` and `chrt --idle` (as the postgres user if root)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found or shutil.which("taskset") is None:
        return None
    bin_dir = found[-1].parent
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="churnops-bench-pg-"))
    port = free_port()
    try:
        if owner:
            shutil.chown(data, "postgres", "postgres")
        initdb = [*owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run([*initdb, "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data}"
        # SCHED_IDLE: PostgreSQL runs in core 1's idle time, so its bursts of COPY work never delay
        # wrk there (the load generator must not be what limits the server under test)
        start = ["taskset", "-c", "1", "chrt", "--idle", "0", *owner, str(bin_dir / "pg_ctl")]
        start += ["-D", str(data), "-l"]
        start += [str(data / "server.log"), "-o", options, "-w", "-t", "60", "start"]
        subprocess.run(start, check=True, capture_output=True, timeout=90)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"(no private PostgreSQL cluster: {err})")
        shutil.rmtree(data, ignore_errors=True)
        return None
    _PRIVATE_PG.append(data)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def drop_database(url: str | None) -> None:
    if url is None:
        return
    if _PRIVATE_PG:
        data = _PRIVATE_PG.pop()
        owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1].parent
        stop = [*owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(stop, check=False, capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(
        "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
    ) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the hot-path layer runs")
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

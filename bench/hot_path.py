"""The hot-path layers of /v1/predict, each on against everything off, in the same run (one core)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from harness import BIN, LUA_DONE, OFF, env_for, free_port, lua_script, run_wrk, start, start_redis, stop

BASELINE = "baseline: every layer off"
REDIS_BASELINE = "baseline, features on Redis: all off"


@dataclass(frozen=True)
class Layer:
    """One configuration of /v1/predict, measured against its group's baseline (the group's first)."""

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
    off; features on Redis for the access-control rows).

    A layer is measured in pairs beside its baseline: both servers up at once on core 0, and in
    each of `rounds` rounds one `duration`-second run of each, back to back (the baseline first in
    even rounds, the layer first in odd ones). The ratio is the layer's requests over the
    baseline's summed over the pairs, so it compares the two seconds apart: on these machines one
    server's throughput drifts by +-15% over minutes, which a baseline measured a minute earlier
    would put into the ratio. An experiment's layer cannot run beside its baseline (every server
    of the store follows a running experiment), so those pair a fresh baseline server with a fresh
    layer server in each round, run one after the other. The spread of the per-pair ratios is
    printed beside each ratio."""
    print(
        f"\nhot-path layers: /v1/predict, c=16, one core; {rounds} pairs of {duration} s runs per layer "
        "(layer and baseline back to back), ratio of sums to the baseline (per-pair range)"
    )
    redis_proc, redis_url = start_redis(tmp)
    try:
        groups = [] if access_only else [layers(pg_url)]
        groups.append(access_layers(tmp, home, ids, duration, redis_url))
        for found in groups:
            base, rest = found[0], found[1:]
            measure_layer(tmp, home, ids, wrk, 3, base)  # warm-up: caches, page cache, numba
            pairs: dict[str, Pairs] = {}
            serial = [layer for layer in rest if layer.experiment is not None]
            for layer in serial:
                pairs[layer.name] = serial_pairs(tmp, home, ids, wrk, duration, base, layer, rounds)
            beside = [layer for layer in rest if layer.experiment is None]
            if beside:
                pairs |= paired_beside(tmp, home, ids, wrk, duration, base, beside, rounds)
            baseline = [run for found_pairs in pairs.values() for run in found_pairs.baseline]
            _print_layer(base, Pairs(baseline, baseline))
            for layer in rest:
                _print_layer(layer, pairs[layer.name])
    finally:
        os.killpg(redis_proc.pid, signal.SIGTERM)
        redis_proc.wait(timeout=10)


@dataclass
class Pairs:
    """A layer's runs and the baseline runs paired with them (same order), and its last note."""

    layer: list[dict[str, float]] = field(default_factory=list)
    baseline: list[dict[str, float]] = field(default_factory=list)
    note: str | None = None


def serial_pairs(
    tmp: Path, home: Path, ids: list[str], wrk: str, duration: int, base: Layer, layer: Layer, rounds: int
) -> Pairs:
    """Per round a fresh baseline server then a fresh layer server (the order swapped every other round)."""
    found = Pairs()
    for round_ in range(rounds):
        order = (base, layer) if round_ % 2 == 0 else (layer, base)
        for measured in order:
            stats, note = measure_layer(tmp, home, ids, wrk, duration, measured, round_)
            if measured is layer:
                found.layer.append(stats)
                found.note = note
            else:
                found.baseline.append(stats)
    return found


def paired_beside(
    tmp: Path,
    home: Path,
    ids: list[str],
    wrk: str,
    duration: int,
    base: Layer,
    beside: list[Layer],
    rounds: int,
) -> dict[str, Pairs]:
    """The baseline and every layer of `beside` up at once; per round, per layer, the two back to back."""
    servers: dict[str, LayerServer] = {}
    try:
        for index, layer in enumerate([base, *beside]):
            servers[layer.name] = LayerServer.start(tmp, home, ids, layer, str(index))
        for server in servers.values():
            server.run(wrk, 3, "warm")  # unrecorded: caches, page cache, numba, pooled connections
        found = {layer.name: Pairs() for layer in beside}
        for round_ in range(rounds):
            for layer in beside if round_ % 2 == 0 else beside[::-1]:
                first, second = (base, layer) if round_ % 2 == 0 else (layer, base)
                runs = {m.name: servers[m.name].run(wrk, duration, f"run{round_}") for m in (first, second)}
                found[layer.name].layer.append(runs[layer.name])
                found[layer.name].baseline.append(runs[base.name])
        for layer in beside:
            found[layer.name].note = servers[layer.name].note()
        return found
    finally:
        for server in servers.values():
            stop(server.proc)


@dataclass
class LayerServer:
    """One layer's `churnops serve` (core 0) and the wrk script its requests use."""

    layer: Layer
    proc: subprocess.Popen[bytes]
    port: int
    script: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, tmp: Path, home: Path, ids: list[str], layer: Layer, tag: str) -> LayerServer:
        """Start and check the layer's server; `tag` names its script and log in `tmp`."""
        body = [json.dumps({"customer_id": c}) for c in ids]
        script = lua_script(tmp / f"layer-{tag}.lua", body, layer.headers)
        port = free_port()
        cmd = [str(BIN / "churnops"), "serve", "--port", str(port), "--workers", "1"]
        env = env_for(home) | layer.env
        proc = start(cmd, env, f"http://127.0.0.1:{port}/health/live", tmp / f"layer-{tag}.log")
        try:
            if layer.env.get("CHURNOPS_AUTH") == "on":
                check_access(f"http://127.0.0.1:{port}", layer, body[0])
        except BaseException:
            stop(proc)  # not handed to a caller yet: nobody else would stop it
            raise
        return cls(layer, proc, port, script)

    @property
    def predict_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/predict"

    def run(self, wrk: str, duration: int, phase: str) -> dict[str, float]:
        """One c=16 run; a layer of one-use requests (signed) gets a fresh script for each."""
        script = self.layer.script(16, phase) if self.layer.script else self.script
        return run_wrk(wrk, self.predict_url, script, 16, duration, warm=False)

    def note(self) -> str | None:
        """The layer's own account of what it did: cost, ledger counters or rate-limit decisions."""
        env = self.layer.env
        if env.get("CHURNOPS_MONITORING") == "on":
            return measured_cost(self.port, time.monotonic() - self.started)
        if env.get("CHURNOPS_AUDIT") == "on":
            return ledger_cost(self.port)
        if env.get("CHURNOPS_AUTH") == "on":
            metrics = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
            decisions = [line for line in metrics.splitlines() if line.startswith("rate_limit_decisions")]
            return "; ".join(decisions) or "no rate-limit decisions"
        return None


def measure_layer(
    tmp: Path, home: Path, ids: list[str], wrk: str, duration: int, layer: Layer, round_: int = 0
) -> tuple[dict[str, float], str | None]:
    """One layer on a fresh server (its experiment created before and stopped after): one run."""
    env = env_for(home) | layer.env
    definition = layer.experiment
    if definition is not None:  # a stopped experiment's name is never reused: one per run
        definition = definition.replace("name: bench-", f"name: bench-{round_}-{time.monotonic_ns()}-", 1)
    experiment = start_experiment(tmp, env, definition) if definition else None
    try:
        server = LayerServer.start(tmp, home, ids, layer, "fresh")
        try:
            warm = layer.script(16, "warm") if layer.script else server.script
            main = layer.script(16, "run") if layer.script else server.script
            stats = run_wrk(wrk, server.predict_url, main, 16, duration, warm)
            note = server.note()
            if experiment is not None:  # the layer really routed by the experiment
                check = httpx.post(server.predict_url, json={"customer_id": ids[0]}).json()
                assert check["model"]["variant"] in {"control", "a", "b", "c", "d"}, check
        finally:
            stop(server.proc)
    finally:
        if experiment is not None:  # also when the server never started
            stop_experiment(env, experiment)
    return stats, note


def _print_layer(layer: Layer, pairs: Pairs) -> None:
    runs, baseline = pairs.layer, pairs.baseline
    rps = sum(r["rps"] for r in runs) / len(runs)
    ratio = sum(r["rps"] for r in runs) / sum(r["rps"] for r in baseline)
    per_pair = [r["rps"] / b["rps"] for r, b in zip(runs, baseline, strict=True)]
    verdict = "" if layer.floor is None else (" ok" if ratio >= layer.floor else " BELOW FLOOR")
    floor = f"(floor {layer.floor:.2f}x)" if layer.floor is not None else ""
    spread = f"[{min(per_pair):.2f}-{max(per_pair):.2f}]" if runs is not baseline else ""
    p99 = max(r["p99_us"] for r in runs) / 1e3
    non2xx = sum(int(r["non2xx"]) for r in runs)
    how = "" if runs is baseline else (" fresh servers" if layer.experiment else " side by side")
    print(
        f"  {layer.name:42} {rps:8,.0f} req/s  {ratio:5.2f}x {spread:11} {floor}{verdict}  "
        f"p99 {p99:6.2f} ms (worst run)  non-2xx {non2xx}{how}",
        flush=True,
    )
    if pairs.note is not None:
        print(f"    {pairs.note}", flush=True)


def measured_cost(port: int, seconds: float) -> str:
    """The service's own cost figure over the last `seconds` (after its next flush)."""
    time.sleep(6.0)  # one flush interval (5 s) and a margin
    window = f"{int(seconds) + 30}s"
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

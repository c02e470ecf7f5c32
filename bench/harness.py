"""What every serving benchmark here shares: pinned servers, wrk runs, and the run's own Redis and
PostgreSQL (on core 1, beside wrk, so the server under test keeps core 0 to itself)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
OFF = {"CHURNOPS_AUTH": "off", "CHURNOPS_AUDIT": "off", "CHURNOPS_MONITORING": "off"}

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
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration: int,
    warm_script: Path | None = None,
    warm: bool = True,
) -> dict[str, float]:
    """One wrk run on core 1 (after a 2 s unrecorded warm-up unless `warm` is False)."""
    pinned = ["taskset", "-c", "1", wrk, "-t1", f"-c{connections}"]
    if warm:
        warm_up = [*pinned, "-d2s", "-s", str(warm_script or script), url]
        subprocess.run(warm_up, capture_output=True, text=True, timeout=60, check=True)
    cmd = [*pinned, f"-d{duration}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    stats = json.loads(next(line for line in out.splitlines() if line.startswith("JSON "))[5:])
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


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

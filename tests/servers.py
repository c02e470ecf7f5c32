"""Throwaway servers for tests: a dedicated redis-server on a free port, controlled by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server: no RDB, no AOF, localhost only; controlled by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (Debian package `redis-server`)")
        log = self.workdir / "redis.log"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(log)]
        self.proc = subprocess.Popen(args)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {log.read_text()[-500:]}")
            try:
                with redis.Redis(port=self.port, socket_timeout=0.2) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        pytest.fail(f"redis-server did not answer PING on port {self.port} within 5 s")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the dependency vanishes without closing anything cleanly."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class ChurnopsServer:
    """A `churnops serve` process in its own session (so SIGTERM reaches its workers too)."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_churnops(
    home: Path, log: Path, workers: int = 1, env: dict[str, str] | None = None, timeout: float = 120
) -> ChurnopsServer:
    """Start `churnops serve` on a free port with CHURNOPS_HOME=home plus `env`; wait until ready.

    Store and registry variables of the calling environment are dropped: only `env` sets them.
    """
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    child |= {"CHURNOPS_HOME": str(home), **(env or {})}
    cmd = [sys.executable, "-m", "churnops", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=child, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"churnops serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return ChurnopsServer(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_churnops(ChurnopsServer(url, proc, log))
    pytest.fail(f"churnops serve not ready after {timeout} s: {log.read_text()[-3000:]}")


def stop_churnops(server: ChurnopsServer) -> int:
    """SIGTERM the process group (graceful drain), SIGKILL if it outlives 40 s; returns the exit code."""
    return stop_group(server.proc, grace=40)


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM a server started with start_new_session, SIGKILL its group if it outlives `grace` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)

"""`churnops demo`: embedded defaults from nothing to a served champion, as a new user runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_trains_registers_and_serves(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_", "CHURNOPS_"))
    }
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "churnops", "demo", "--rows", "3000", "--port", str(port)]
    with log.open("wb") as out:  # cwd has no params.yaml: the built-in defaults apply
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        text = log.read_text()
        assert "registered churn-synthetic v1" in text
        # A clean first run: no library chatter or warnings (Great Expectations' INFO lines included).
        assert "ephemeral docs site" not in text
        assert not re.search(r"Warning\b|WARNING", text), text[:3000]
        customer = (
            (tmp_path / ".churnops" / "data" / "demo-3000.csv").read_text().splitlines()[1].split(",")[0]
        )
        url = f"http://127.0.0.1:{port}/v1/predict"
        refused = httpx.post(url, json={"customer_id": customer}, timeout=5)
        assert refused.status_code == 401
        assert "churnops keys create" in refused.json()["error"]["message"]
        key = re.search(r"X-API-Key: (cho_\w+)", text)
        assert key is not None, text[-2000:]
        headers = {"X-API-Key": key.group(1)}
        response = httpx.post(url, json={"customer_id": customer}, headers=headers, timeout=5)
        assert response.status_code == 200, response.text
        assert response.json()["feature_source"] == "online_store"
        assert (tmp_path / ".churnops" / "pipeline" / "evaluation" / "model_card.md").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        # uvicorn drains, shuts the app down, then re-raises the signal it caught.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()

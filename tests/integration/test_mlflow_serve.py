"""`mlflow models serve` serves the registered champion: the pyfunc is a standard MLflow model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from churnops.io.registry import MlflowRegistry
from tests.conftest import PipelineRun
from tests.servers import stop_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def test_mlflow_models_serve_scores_raw_rows(pipeline_run: PipelineRun) -> None:
    port = free_port()
    bin_dir = Path(sys.executable).parent  # mlflow runs `uvicorn` from PATH
    env = dict(os.environ, MLFLOW_TRACKING_URI=pipeline_run.settings.tracking_uri)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    mlflow_bin = bin_dir / "mlflow"
    cmd = [str(mlflow_bin), "models", "serve", "-m", "models:/churn-synthetic@champion"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc)
        raw = pd.read_csv(pipeline_run.data).head(20)
        features = raw.drop(columns=["customer_id", "churn", "true_churn_probability"])
        body = {
            "dataframe_split": features.astype(object).where(features.notna(), None).to_dict(orient="split")
        }
        body["dataframe_split"].pop("index")
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["predictions"], dtype=float).ravel()
        bundle = MlflowRegistry(pipeline_run.settings.tracking_uri, None).load_bundle(
            "churn-synthetic", "champion"
        )
        np.testing.assert_allclose(served, bundle.predict_proba(raw), rtol=1e-9)
    finally:
        stop_group(proc, grace=20)

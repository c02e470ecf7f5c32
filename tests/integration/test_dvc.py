"""`dvc repro` runs the dvc.yaml stages through the CLI on a small dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_dvc_repro_runs_every_stage(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_", "CHURNOPS_"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text().replace("rows: 20000", "rows: 2000"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / ".gitignore").write_text(".churnops/\n")
    assert run(["git", "init", "-q"], tmp_path, env).returncode == 0
    init = run([str(bin_dir / "dvc"), "init", "-q"], tmp_path, env)
    assert init.returncode == 0, init.stderr

    repro = run([str(bin_dir / "dvc"), "repro"], tmp_path, env)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    for stage in ("generate", "ingest", "validate", "featurize", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in repro.stdout
    registration = json.loads((tmp_path / ".churnops/pipeline/registration.json").read_text())
    assert registration["version"] == "1"
    assert registration["champion"] is True
    assert (tmp_path / "dvc.lock").is_file()

    metrics = run([str(bin_dir / "dvc"), "metrics", "show", "--json"], tmp_path, env)
    assert metrics.returncode == 0, metrics.stderr
    assert "roc_auc" in metrics.stdout

    again = run([str(bin_dir / "dvc"), "repro"], tmp_path, env)
    assert again.returncode == 0
    assert "didn't change, skipping" in again.stdout

"""Benchmark: the whole pipeline (`churnops pipeline run`) on 100,000 synthetic customers.

Runs the real CLI in a throwaway CHURNOPS_HOME with the repository's params.yaml, so the
figure includes imports, validation, all candidates, the hyperparameter search (params.yaml
budget), cross-validation and MLflow logging,
with the progress display shown live. The reference, measured in the same run, is what a
hand-written script would at least spend: read the CSV and fit one LightGBM model of the
same size on the numeric columns. Usage: `python bench/bench_pipeline.py [rows]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import pandas as pd

from churnops.core.synthetic import generate_customers

BUDGET_S = 300.0  # issue 13: the pipeline with the default search budget (120 s) under 5 minutes
REPO = Path(__file__).resolve().parents[1]


def reference_seconds(data: Path) -> float:
    """read_csv + one LightGBM fit (200 rounds) on the numeric columns."""
    start = time.perf_counter()
    frame = pd.read_csv(data)
    numeric = frame.select_dtypes("number").drop(columns=["true_churn_probability"])
    labels = (frame["churn"] == "Yes").astype(int)
    lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(numeric, labels), num_boost_round=200)
    return time.perf_counter() - start


def search_seconds(home: Path) -> str:
    training = json.loads((home / "pipeline" / "training.json").read_text())
    search = training.get("search", {})
    if not search.get("enabled"):
        return "search off"
    return f"search {search['seconds']:.0f} s of its {search['budget_seconds']:.0f} s budget"


def pipeline_seconds(data: Path, home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    env["CHURNOPS_HOME"] = str(home)
    churnops = Path(sys.executable).with_name("churnops")
    cmd = [str(churnops), "pipeline", "run", "--data", str(data), "--params", str(REPO / "params.yaml")]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, timeout=900)
    return time.perf_counter() - start


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "customers.csv"
        generate_customers(rows, seed=42).to_csv(data, index=False)
        reference = reference_seconds(data)
        total = pipeline_seconds(data, Path(tmp) / "home")
        search = search_seconds(Path(tmp) / "home")
    print(f"\nrows                     {rows:,}")
    verdict = "ok" if total < BUDGET_S else "OVER"
    print(f"pipeline run             {total:7.1f} s   (budget {BUDGET_S:.0f} s: {verdict}; {search})")
    print(f"reference (csv + 1 LGBM) {reference:7.1f} s")
    print(f"ratio pipeline/reference {total / reference:7.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

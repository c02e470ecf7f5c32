"""Model quality against known ceilings, in one run.

1. Synthetic data (default 200,000 rows): the champion's holdout ROC AUC against the
   generator's oracle AUC (the true churn probabilities) on the very same holdout rows.
2. IBM Telco (../shared/data/telco_churn.csv, when present): holdout ROC AUC on the
   params.yaml split and the chosen candidate's 5-fold CV ROC AUC on the training part.
Usage: `python bench/bench_quality.py [rows]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from churnops.core.split import HOLDOUT
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_params, load_spec, write_table
from churnops.jobs.featurize import load_split
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TELCO = REPO.parent / "shared" / "data" / "telco_churn.csv"


def run(data: Path, spec: str, home: Path) -> tuple[dict, Workdir]:
    settings = Settings(churnops_home=home, mlflow_tracking_uri=None, database_url=None)
    workdir = Workdir(home / "pipeline")
    result = run_pipeline(data, load_spec(spec), load_params(REPO / "params.yaml"), settings, workdir)
    return result, workdir


def synthetic(rows: int, tmp: Path) -> None:
    frame = generate_customers(rows, seed=42)
    data = write_table(frame, tmp / "synthetic.csv")
    started = time.perf_counter()
    result, workdir = run(data, "synthetic", tmp / "home-synthetic")
    holdout_ids = set(workdir.read_snapshot()["customer_id"][load_split(workdir).to_numpy() == HOLDOUT])
    holdout = frame[frame["customer_id"].isin(holdout_ids)]
    oracle = roc_auc_score(holdout["churn"] == "Yes", holdout["true_churn_probability"])
    evaluation = result["evaluate"]
    champion = evaluation["candidates"][evaluation["chosen"]]["holdout"]["roc_auc"]
    print(f"synthetic {rows:,} rows ({time.perf_counter() - started:.0f} s), chosen {evaluation['chosen']}")
    print(f"  holdout rows         {len(holdout):,}")
    print(f"  oracle ROC AUC       {oracle:.4f}")
    print(f"  champion ROC AUC     {champion:.4f}")
    print(f"  gap                  {oracle - champion:.4f}  (goal <= 0.02)")
    for name, c in evaluation["candidates"].items():
        print(f"    {name:10} holdout ROC AUC {c['holdout']['roc_auc']:.4f}")


def telco(tmp: Path) -> None:
    if not TELCO.is_file():
        print(f"telco: {TELCO} not found, skipped")
        return
    result, _ = run(TELCO, "telco", tmp / "home-telco")
    evaluation = result["evaluate"]
    chosen = evaluation["chosen"]
    cv = evaluation["cv"]
    print(f"telco {pd.read_csv(TELCO).shape[0]:,} rows, chosen {chosen}")
    print(
        f"  holdout ROC AUC      {evaluation['candidates'][chosen]['holdout']['roc_auc']:.4f}  (goal >= 0.84)"
    )
    print(f"  5-fold CV ROC AUC    {cv['mean']:.4f} ± {cv['std']:.4f} on {cv['rows']:,} training rows")
    for name, c in evaluation["candidates"].items():
        print(f"    {name:10} holdout ROC AUC {c['holdout']['roc_auc']:.4f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        telco(Path(directory))
        synthetic(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, Path(directory))

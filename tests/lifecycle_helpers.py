"""What the lifecycle tests share: quick params, customers of known kinds, the CLI, the history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from churnops.core.params import Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec, write_table
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

# One quick candidate, no cross-validation: a registration in a few seconds.
QUICK = {
    "training": {
        "candidates": [
            {
                "name": "lightgbm",
                "kind": "lightgbm",
                "params": {"n_estimators": 200, "learning_rate": 0.1, "num_leaves": 15, "num_threads": 1},
                "early_stopping_rounds": 20,
            }
        ],
        "budget_seconds": 120,
        "search": {"enabled": False},
        "blend": False,
    },
    "evaluation": {"cv_folds": 0},
}


def quick_params(**sections: Any) -> Params:
    raw = {**QUICK, **sections}
    return Params.model_validate(raw)


def write_params(path: Path, **sections: Any) -> Path:
    path.write_text(yaml.safe_dump({**QUICK, **sections}))
    return path


def customers(
    rows: int,
    seed: int,
    prefix: str = "",
    drift: str | None = None,
    shuffle: bool = False,
    noise: float = 0.0,
) -> pd.DataFrame:
    """Synthetic customers; `prefix` makes them other customers than another seed's (the generator
    numbers every draw C0001...), `shuffle` permutes the labels (a model of it learns nothing),
    `noise` flips that share of them (a weaker model)."""
    frame = generate_customers(rows, seed=seed, drift=drift)
    frame["customer_id"] = prefix + frame["customer_id"]
    rng = np.random.default_rng(seed)
    if shuffle:
        frame["churn"] = rng.permutation(frame["churn"].to_numpy())
    if noise:
        flip = rng.random(len(frame)) < noise
        frame.loc[flip, "churn"] = np.where(frame.loc[flip, "churn"] == "Yes", "No", "Yes")
    return frame


def train(
    settings: Settings, frame: pd.DataFrame, root: Path, name: str, params: Params | None = None
) -> dict:
    """Run the pipeline on `frame` in its own working directory; returns the registration."""
    data = write_table(frame, root / f"{name}.csv")
    result = run_pipeline(
        data, load_spec("synthetic"), params or quick_params(), settings, Workdir(root / name)
    )
    return dict(result["register"])


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
):
    """`python -m churnops ARGS` with CHURNOPS_HOME=home (store variables of the caller dropped)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_"))}
    child |= {"CHURNOPS_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "churnops", *args],
        capture_output=True,
        text=True,
        env=child,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def history(home: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = cli(home, "models", "history", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))

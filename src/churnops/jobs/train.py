"""Train: every candidate from params.yaml inside one wall-clock budget; pick the best on validation."""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from churnops.core.candidates import TrainedCandidate, TrainingData, fit_candidate
from churnops.core.params import TrainingParams
from churnops.core.schema import target_labels
from churnops.core.split import FIT, VALIDATION
from churnops.errors import TrainingError
from churnops.jobs.featurize import load_split, load_transformer
from churnops.jobs.workdir import Workdir, read_json, write_json

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def training_data(workdir: Workdir) -> TrainingData:
    """Transformed fit and validation sets from the workdir."""
    spec = workdir.read_spec()
    frame = workdir.read_training_frame()
    split = load_split(workdir).to_numpy()
    transformer = load_transformer(workdir)
    labels = target_labels(frame, spec)
    fit, val = split == FIT, split == VALIDATION
    return TrainingData(
        x_fit=transformer.transform(frame[fit]),
        y_fit=labels[fit],
        x_val=transformer.transform(frame[val]),
        y_val=labels[val],
    )


def validation_scores(candidate: TrainedCandidate, data: TrainingData) -> dict[str, float]:
    proba = candidate.classifier.predict_proba(data.x_val)
    return {
        "roc_auc": float(roc_auc_score(data.y_val, proba)),
        "pr_auc": float(average_precision_score(data.y_val, proba)),
        "log_loss": float(log_loss(data.y_val, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


def train(workdir: Workdir, params: TrainingParams, progress: Progress | None = None) -> dict[str, Any]:
    """Fit candidates in order until the budget is spent; write `candidates/*.pkl` and `training.json`."""
    data = training_data(workdir)
    deadline = time.perf_counter() + params.budget_seconds
    workdir.candidates_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    skipped: list[str] = []
    for candidate in params.candidates:
        if time.perf_counter() > deadline:
            skipped.append(candidate.name)
            logger.warning(
                "budget of %.0f s spent: candidate %s skipped", params.budget_seconds, candidate.name
            )
            continue
        if progress:
            progress(f"training {candidate.name}")
        trained = fit_candidate(candidate, data, deadline)
        scores = validation_scores(trained, data)
        with (workdir.candidates_dir / f"{candidate.name}.pkl").open("wb") as handle:
            pickle.dump(trained, handle, protocol=pickle.HIGHEST_PROTOCOL)
        results[candidate.name] = {
            "kind": candidate.kind,
            "seconds": round(trained.seconds, 3),
            "best_iteration": trained.best_iteration,
            "stopped_by_budget": trained.stopped_by_budget,
            "validation": scores,
        }
        logger.info(
            "trained %s in %.1f s: validation ROC AUC %.4f",
            candidate.name,
            trained.seconds,
            scores["roc_auc"],
        )
    if not results:
        raise TrainingError(f"no candidate trained within budget_seconds={params.budget_seconds}")
    chosen = _choose(results, params.selection_metric)
    summary = {
        "candidates": results,
        "chosen": chosen,
        "skipped": skipped,
        "selection_metric": params.selection_metric,
    }
    write_json(workdir.training, summary)
    logger.info("chosen candidate: %s (validation %s)", chosen, params.selection_metric)
    return summary


def _choose(results: dict[str, Any], metric: str) -> str:
    sign = -1.0 if metric == "log_loss" else 1.0

    def score(name: str) -> float:
        value = float(results[name]["validation"][metric])
        return -math.inf if math.isnan(value) else sign * value

    return max(results, key=score)


def load_candidate(workdir: Workdir, name: str) -> TrainedCandidate:
    with workdir.require(workdir.candidates_dir / f"{name}.pkl", "train").open("rb") as handle:
        trained: TrainedCandidate = pickle.load(handle)
    return trained


def load_training(workdir: Workdir) -> dict[str, Any]:
    summary: dict[str, Any] = read_json(workdir.require(workdir.training, "train"))
    return summary

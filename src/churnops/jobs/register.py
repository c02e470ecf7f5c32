"""Register: one MLflow run per candidate, the chosen one as a pyfunc model version, then the promotion
path (gates against the champion, aliases, the lifecycle event)."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Any

import pandas as pd

from churnops.core.examples import synthetic_rows
from churnops.core.model_card import ModelCardData, render_model_card
from churnops.core.params import Params
from churnops.core.spec import DatasetSpec
from churnops.io.pyfunc_model import load_bundle
from churnops.io.registry import CHALLENGER, CHAMPION, MlflowRegistry
from churnops.jobs.lineage import lineage_tags
from churnops.jobs.score import cache_compiled
from churnops.jobs.train import load_training, load_trials
from churnops.jobs.version_files import record_registration
from churnops.jobs.workdir import Workdir, read_json, write_json
from churnops.settings import Settings

logger = logging.getLogger(__name__)


def register(
    workdir: Workdir,
    params: Params,
    settings: Settings,
    registry: MlflowRegistry,
    *,
    trigger: str = "pipeline",
    principal: str | None = None,
) -> dict[str, Any]:
    """Log candidate runs, register the chosen model, run the promotion path; write `registration.json`."""
    from churnops.jobs.privacy import cli_principal
    from churnops.jobs.promote import open_lifecycle, promote

    meta, training = workdir.read_meta(), load_training(workdir)
    report = read_json(workdir.require(workdir.metrics, "evaluate"))
    spec = workdir.read_spec()
    model_name = settings.resolved_model_name(spec.name)
    tags = lineage_tags(meta)
    chosen = training["chosen"]
    trials = load_trials(workdir)
    version = ""
    with registry.run(f"pipeline-{spec.name}", tags | {"churnops.kind": "pipeline"}) as parent_id:
        for name in training["candidates"]:
            with registry.run(
                name, tags | {"candidate": name, "chosen": str(name == chosen)}, parent_id
            ) as run_id:
                registry.log_run_data(
                    run_id, _candidate_params(params, name, training), _run_metrics(name, report, training)
                )
                if trials.get(name):
                    registry.log_child_runs(
                        run_id, tags | {"candidate": name}, _trial_runs(name, trials[name])
                    )
                if name == chosen:
                    version = _log_chosen(workdir, registry, run_id, model_name, tags, report, training)
    cache_compiled(settings, registry, model_name, version, load_bundle(workdir.bundle))
    with open_lifecycle(settings, params, registry) as lc:
        record_registration(registry, model_name, version, workdir, params, lc.keys.pseudonym_key)
        move = promote(
            lc,
            version,
            action="register",
            trigger=trigger,
            principal=principal or cli_principal(),
            model=model_name,
            workdir=workdir,
        )
    result = {
        "model_name": model_name,
        "version": version,
        "champion": registry.alias_version(model_name, CHAMPION) == version,
        "challenger": registry.alias_version(model_name, CHALLENGER) == version,
        "status": move.outcome,
        "reason": move.reason,
        "previous_champion": move.previous,
        "gates": (move.gates or {}).get("status"),
        "event_id": move.event_id,
        "model_uri": f"models:/{model_name}/{version}",
    }
    write_json(workdir.registration, result)
    # The promotion path has logged the outcome's reason (champion, rejected, trial, pending): once.
    logger.info("registered %s v%s: %s", model_name, version, move.outcome)
    return result


def _candidate_params(params: Params, name: str, training: dict[str, Any]) -> dict[str, Any]:
    """The parameters the candidate was fitted with (searched or default): a later search warm-starts
    from the champion's."""
    entry = training["candidates"][name]
    split = {"split.seed": params.split.seed, "split.holdout_fraction": params.split.holdout_fraction}
    if entry.get("blend"):  # a blend: its members' weights and parameters
        members = {f"blend.{member}": weight for member, weight in entry["blend"]["weights"].items()}
        for member in entry["blend"]["weights"]:
            fitted = training["candidates"][member]
            members[f"member.{member}.kind"] = fitted["kind"]
            members |= {f"member.{member}.{k}": v for k, v in fitted.get("params", {}).items()}
        return members | {"kind": entry["kind"], "params_source": entry["source"]} | split
    candidate = next(c for c in params.training.candidates if c.name == name)
    fitted = entry.get("params", candidate.params)
    flat = {f"model.{k}": v for k, v in fitted.items()}
    return (
        flat
        | split
        | {
            "kind": candidate.kind,
            "early_stopping_rounds": entry.get("early_stopping_rounds", candidate.early_stopping_rounds),
            "params_source": entry.get("source", "default"),
        }
    )


_TRIAL_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "out_of_time": "KILLED", "failed": "FAILED"}


def _trial_runs(name: str, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One child run per search trial: its parameters, CV score and fold scores; no artifacts."""
    runs = []
    for trial in trials:
        metrics = {f"cv_fold_{i}": v for i, v in enumerate(trial["folds"])}
        if trial["value"] is not None:
            metrics["cv_score"] = trial["value"]
        metrics["trial_seconds"] = trial["seconds"]
        start_ms = int(trial["started"] * 1000)
        runs.append(
            {
                "name": f"{name}-trial-{trial['number']}",
                "params": {f"model.{k}": v for k, v in trial["params"].items()},
                "metrics": metrics,
                "tags": {
                    "trial": str(trial["number"]),
                    "trial.state": trial["state"],
                    "trial.source": trial["source"],
                },
                "status": _TRIAL_STATUS.get(trial["state"], "FAILED"),
                "start_ms": start_ms,
                "end_ms": start_ms + int(trial["seconds"] * 1000),
            }
        )
    return runs


def _run_metrics(name: str, report: dict[str, Any], training: dict[str, Any]) -> dict[str, float]:
    metrics = dict(report["candidates"][name]["holdout"])
    metrics |= {f"val_{k}": v for k, v in training["candidates"][name]["validation"].items()}
    metrics["threshold"] = report["candidates"][name]["threshold"]
    metrics["train_seconds"] = training["candidates"][name]["seconds"]
    search = training["candidates"][name].get("search") or {}
    metrics |= {f"search.{k}": v for k, v in search.items() if isinstance(v, int | float)}
    calibration = report["candidates"][name].get("calibration") or {}
    if "ece_uncalibrated" in calibration:
        metrics["ece_uncalibrated"] = calibration["ece_uncalibrated"]
    if name == training["chosen"]:
        if report.get("cv"):
            metrics |= {"cv_roc_auc_mean": report["cv"]["mean"], "cv_roc_auc_std": report["cv"]["std"]}
        metrics["expected_profit"] = report["threshold"]["expected_profit"]
        for column, gap in report["fairness"].items():
            metrics[f"fairness.{column}.demographic_parity_difference"] = gap["demographic_parity_difference"]
            metrics[f"fairness.{column}.equal_opportunity_difference"] = gap["equal_opportunity_difference"]
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _log_chosen(
    workdir: Workdir,
    registry: MlflowRegistry,
    run_id: str,
    model_name: str,
    tags: dict[str, str],
    report: dict[str, Any],
    training: dict[str, Any],
) -> str:
    """Log the pyfunc model and evidence (plots, metrics, card, validation report) in the chosen run."""
    frame = workdir.read_snapshot()
    spec = workdir.read_spec()
    version_tags = tags | {
        "threshold": str(report["threshold"]["threshold"]),
        "candidate": training["chosen"],
    }
    example = _input_example(frame, spec)
    version = registry.log_model(run_id, workdir.bundle, model_name, example, version_tags)
    if workdir.reference_profile.exists():  # also inside the bundle; the artifact is what backfills add to
        registry.save_reference_profile(model_name, version, read_json(workdir.reference_profile))
    with workdir.model_card_data.open("rb") as handle:
        # bandit B301: this pipeline's own output
        card: ModelCardData = pickle.load(handle)  # nosec B301
    workdir.model_card.write_text(
        render_model_card(dataclasses.replace(card, model_name=model_name, model_version=version))
    )
    evidence = [*sorted(workdir.evaluation_dir.glob("*.png")), workdir.metrics, workdir.model_card]
    registry.log_run_data(run_id, {}, {}, evidence, artifact_path="evaluation")
    registry.log_run_data(
        run_id, {}, {}, sorted(workdir.validation_dir.glob("validation.*")), artifact_path="validation"
    )
    return version


def _input_example(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A few rows for the model signature, none of them a real customer's (PII missing); integer
    columns as float since serving may send nulls."""
    example = synthetic_rows(frame, spec).infer_objects()
    for column in example.columns:
        if pd.api.types.is_integer_dtype(example[column]):
            example[column] = example[column].astype("float64")
    return example

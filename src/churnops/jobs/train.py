"""Train: every candidate from params.yaml inside one wall-clock budget, then (search on) each
family's search; pick the best on validation.

Per candidate the fixed parameters are fitted first, exactly as with `--search off`. The search
(`jobs/search.py`) then looks for a better configuration by k-fold on the fit rows; its best is
refitted like the defaults (fit rows, early stopping on validation) and replaces them only when
it also wins on validation. So the chosen model is never worse on validation than the best
default candidate.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import pickle
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from churnops.core.blend import MIN_GAIN, blend, choose_blend
from churnops.core.candidates import TrainedCandidate, TrainingData, fit_candidate
from churnops.core.params import BLEND, CandidateParams, TrainingParams
from churnops.core.schema import target_labels
from churnops.core.search import better, with_params, within
from churnops.core.split import FIT, VALIDATION
from churnops.errors import TrainingError
from churnops.jobs.featurize import load_split, load_transformer
from churnops.jobs.workdir import Workdir, read_json, write_json

if TYPE_CHECKING:
    from churnops.jobs.search import FamilyResult
    from churnops.settings import Settings

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
WarmStart = dict[str, dict[str, Any]]  # family -> the previous champion's parameters
TRIALS_FILE = "trials.json"


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


def train(
    workdir: Workdir,
    params: TrainingParams,
    progress: Progress | None = None,
    warm_start: WarmStart | None = None,
) -> dict[str, Any]:
    """Fit candidates in order until the budget is spent, search when enabled; write
    `candidates/*.pkl`, `candidates/trials.json` and `training.json`."""
    data = training_data(workdir)
    deadline = time.perf_counter() + params.budget_seconds
    workdir.candidates_dir.mkdir(parents=True, exist_ok=True)
    fitted, skipped = _fit_defaults(params, data, deadline, progress)
    if not fitted:
        raise TrainingError(f"no candidate trained within budget_seconds={params.budget_seconds}")
    search_summary: dict[str, Any] = {"enabled": params.search.enabled}
    trials: dict[str, list[dict[str, Any]]] = {}
    if params.search.enabled:
        search_summary, trials = _search(params, data, deadline, fitted, warm_start, progress)
    if params.blend:
        _add_blend(fitted, data, params.selection_metric)
    results: dict[str, Any] = {}
    for name, (trained, scores, entry) in fitted.items():
        with (workdir.candidates_dir / f"{name}.pkl").open("wb") as handle:
            pickle.dump(trained, handle, protocol=pickle.HIGHEST_PROTOCOL)
        results[name] = entry | _entry(trained, scores)
    write_json(workdir.candidates_dir / TRIALS_FILE, trials)
    chosen = _choose(results, params.selection_metric)
    summary = {
        "candidates": results,
        "chosen": chosen,
        "skipped": skipped,
        "selection_metric": params.selection_metric,
        "search": search_summary,
    }
    write_json(workdir.training, summary)
    logger.info("chosen candidate: %s (validation %s)", chosen, params.selection_metric)
    return summary


Fitted = dict[str, tuple[TrainedCandidate, dict[str, float], dict[str, Any]]]


def _fit_defaults(
    params: TrainingParams, data: TrainingData, deadline: float, progress: Progress | None
) -> tuple[Fitted, list[str]]:
    fitted: Fitted = {}
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
        fitted[candidate.name] = (trained, scores, {"kind": candidate.kind, "source": "default"})
        logger.info(
            "trained %s in %.1f s: validation ROC AUC %.4f",
            candidate.name,
            trained.seconds,
            scores["roc_auc"],
        )
    return fitted, skipped


def _search(
    params: TrainingParams,
    data: TrainingData,
    deadline: float,
    fitted: Fitted,
    warm_start: WarmStart | None,
    progress: Progress | None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Search the fitted candidates' families; adopt a searched configuration that wins on validation."""
    from churnops.jobs.search import run_search, trial_records

    started = time.perf_counter()
    search_deadline = min(started + params.search.budget_seconds, deadline)
    candidates = params.model_copy(
        update={"candidates": tuple(c for c in params.candidates if c.name in fitted)}
    )
    found = run_search(candidates, data, search_deadline, warm_start, progress)
    search_seconds = time.perf_counter() - started
    for name, result in found.items():
        candidate = next(c for c in params.candidates if c.name == name)
        fitted[name] = _adopt(candidate, fitted[name], result, data, deadline, params, progress)
    summary = {
        "enabled": True,
        "budget_seconds": params.search.budget_seconds,
        "seconds": round(search_seconds, 3),
        "warm_start": sorted(warm_start or {}),
    }
    return summary, trial_records(found)


def _adopt(
    candidate: CandidateParams,
    default: tuple[TrainedCandidate, dict[str, float], dict[str, Any]],
    result: FamilyResult,
    data: TrainingData,
    deadline: float,
    params: TrainingParams,
    progress: Progress | None,
) -> tuple[TrainedCandidate, dict[str, float], dict[str, Any]]:
    """Refit the search's best configuration; keep it only when it beats the defaults on validation."""
    trained, scores, entry = default
    metric = params.selection_metric
    entry = entry | {"search": result.summary(), "default_validation": scores}
    space = params.search.spaces[candidate.kind]
    if result.best_params is None or result.best_params == within(space, candidate.params):
        entry["search"]["outcome"] = "defaults were best in CV"
        return trained, scores, entry
    if time.perf_counter() > deadline:
        entry["search"]["outcome"] = "training budget spent before the refit"
        return trained, scores, entry
    if progress:
        progress(f"refitting {candidate.name} with the searched parameters")
    refit = fit_candidate(with_params(candidate, result.best_params), data, deadline)
    refit_scores = validation_scores(refit, data)
    entry["searched_validation"] = refit_scores
    if refit.stopped_by_budget or not better(metric, refit_scores[metric], scores[metric]):
        entry["search"]["outcome"] = "searched configuration did not beat the defaults on validation"
        return trained, scores, entry
    entry["search"]["outcome"] = "searched configuration adopted"
    logger.info(
        "%s: searched configuration adopted (validation %s %.4f, defaults %.4f)",
        candidate.name,
        metric,
        refit_scores[metric],
        scores[metric],
    )
    return refit, refit_scores, entry | {"source": "search"}


def _add_blend(fitted: Fitted, data: TrainingData, metric: str) -> None:
    """Add the blend of the best linear and the best tree candidate when it pays on validation."""
    pool = {
        name: (entry["kind"], t.classifier, scores[metric]) for name, (t, scores, entry) in fitted.items()
    }
    choice = choose_blend(pool, data.x_val, data.y_val, metric)
    if choice is None:
        return
    summary = {
        "weights": dict(zip(choice.names, choice.weights, strict=True)),
        f"validation_{metric}": choice.score,
        f"best_single_{metric}": choice.best_single,
    }
    if not choice.pays:
        weights = " + ".join(f"{n} {w:.2f}" for n, w in zip(choice.names, choice.weights, strict=True))
        logger.info(
            "blend %s does not pay on validation: %s %.4f vs %.4f for the best single candidate "
            "(it must gain more than %g)",
            weights,
            metric,
            choice.score,
            choice.best_single,
            MIN_GAIN,
        )
        return
    classifier = blend(choice, fitted[choice.names[0]][0].classifier, fitted[choice.names[1]][0].classifier)
    trained = TrainedCandidate(name=BLEND, classifier=classifier, seconds=0.0, notes=summary)
    scores = validation_scores(trained, data)
    fitted[BLEND] = (trained, scores, {"kind": BLEND, "source": BLEND, "blend": summary})
    logger.info(
        "blend %s: validation %s %.4f (best single %.4f)",
        classifier.describe(),
        metric,
        choice.score,
        choice.best_single,
    )


def _entry(trained: TrainedCandidate, scores: dict[str, float]) -> dict[str, Any]:
    config = trained.config
    return {
        "seconds": round(trained.seconds, 3),
        "best_iteration": trained.best_iteration,
        "stopped_by_budget": trained.stopped_by_budget,
        "validation": scores,
        "params": dict(config.params) if config else {},
        "early_stopping_rounds": config.early_stopping_rounds if config else None,
    }


def _choose(results: dict[str, Any], metric: str) -> str:
    sign = -1.0 if metric == "log_loss" else 1.0

    def score(name: str) -> float:
        value = float(results[name]["validation"][metric])
        return -math.inf if math.isnan(value) else sign * value

    return max(results, key=score)


def load_candidate(workdir: Workdir, name: str) -> TrainedCandidate:
    with workdir.require(workdir.candidates_dir / f"{name}.pkl", "train").open("rb") as handle:
        # bandit B301: this pipeline's own output
        trained: TrainedCandidate = pickle.load(handle)  # nosec B301
    return trained


def load_training(workdir: Workdir) -> dict[str, Any]:
    summary: dict[str, Any] = read_json(workdir.require(workdir.training, "train"))
    return summary


def load_trials(workdir: Workdir) -> dict[str, list[dict[str, Any]]]:
    """The search's trials per candidate ({} when the search was off or predates this file)."""
    path = workdir.candidates_dir / TRIALS_FILE
    trials: dict[str, list[dict[str, Any]]] = read_json(path) if path.is_file() else {}
    return trials


# -- warm start ---------------------------------------------------------------------------


def warm_start_for(settings: Settings, workdir: Workdir, params: TrainingParams) -> WarmStart | None:
    """The current champion's parameters by family, read from its registry run (None when the
    search or its warm start is off, or there is no champion yet)."""
    if not (params.search.enabled and params.search.warm_start):
        return None
    from churnops.io.registry import CHAMPION, MlflowRegistry

    settings.ensure_home()
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root, settings.experiment_name)
    found = registry.alias_run_params(settings.resolved_model_name(workdir.read_spec().name), CHAMPION)
    if found is None:
        return None
    version, logged = found
    warm = champion_params(logged)
    if warm:
        logger.info("search warm-starts %s from champion v%s", ", ".join(warm), version)
    return warm


def champion_params(logged: Mapping[str, str]) -> WarmStart:
    """{family: parameters} from a candidate run's logged params (`kind` and `model.<name>`; for a
    blend each member's `member.<candidate>.kind` and `member.<candidate>.<name>`)."""
    kind = logged.get("kind")
    if kind == BLEND:
        warm: WarmStart = {}
        for key, member_kind in logged.items():
            if key.startswith("member.") and key.endswith(".kind"):
                prefix = key.removesuffix("kind")
                warm[member_kind] = {
                    k.removeprefix(prefix): _parse(v)
                    for k, v in logged.items()
                    if k.startswith(prefix) and k != key
                }
        return warm
    if not kind:
        return {}
    values = {key.removeprefix("model."): _parse(v) for key, v in logged.items() if key.startswith("model.")}
    return {kind: values}


def _parse(text: str) -> Any:
    """An MLflow param (always a string) back to the value it was logged from."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            return json.loads(text)
        except ValueError:
            return text

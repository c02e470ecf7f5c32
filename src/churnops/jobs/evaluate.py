"""Evaluate: per candidate a calibration map chosen on validation, the business threshold on the
calibrated validation probabilities and holdout metrics (ECE before and after calibration); for
the chosen one the reliability curve, slices, fairness gaps, cross-validation, plots, a model card
and the model bundle (its classifier calibrated, as served)."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold

from churnops.core.blend import BlendClassifier
from churnops.core.bundle import ModelBundle
from churnops.core.calibration import calibrated, choose_calibration, uncalibrated
from churnops.core.candidates import Classifier, TrainedCandidate, refit_fixed
from churnops.core.drift_profile import ReferenceProfile, build_profile
from churnops.core.examples import synthetic_rows
from churnops.core.fairness import FairnessGap, SliceResult, bucket_numeric, fairness_gaps, slice_metrics
from churnops.core.features import FeatureTransformer
from churnops.core.metrics import classification_metrics, reliability_curve
from churnops.core.model_card import CandidateSummary, ModelCardData, render_model_card
from churnops.core.params import CandidateParams, Params
from churnops.core.schema import target_labels
from churnops.core.spec import DatasetSpec
from churnops.core.split import HOLDOUT, VALIDATION
from churnops.core.threshold import ThresholdChoice, choose_threshold
from churnops.io import plots
from churnops.io.pyfunc_model import save_bundle
from churnops.jobs.featurize import load_split, load_transformer
from churnops.jobs.train import load_candidate, load_training
from churnops.jobs.workdir import Workdir, write_json

logger = logging.getLogger(__name__)


def evaluate(workdir: Workdir, params: Params) -> dict[str, Any]:
    """Write `evaluation/metrics.json`, PNG plots, `model_card.md` and the chosen `bundle.pkl`."""
    spec, frame = workdir.read_spec(), workdir.read_training_frame()
    split, labels = load_split(workdir).to_numpy(), target_labels(frame, spec)
    transformer, training = load_transformer(workdir), load_training(workdir)
    holdout, validation = split == HOLDOUT, split == VALIDATION
    x_hold, y_hold = transformer.transform(frame[holdout]), labels[holdout]
    x_val, y_val = transformer.transform(frame[validation]), labels[validation]
    out = workdir.evaluation_dir
    out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {
        "candidates": {},
        "chosen": training["chosen"],
        "holdout_rows": int(holdout.sum()),
    }
    for name in training["candidates"]:
        trained, choice, proba, entry = _evaluate_candidate(
            load_candidate(workdir, name), x_val, y_val, x_hold, y_hold, params
        )
        report["candidates"][name] = entry
        if name == training["chosen"]:
            chosen, chosen_choice, chosen_proba = trained, choice, proba

    holdout_frame = frame[holdout].reset_index(drop=True)
    details, slices, fairness = _chosen_details(
        spec, holdout_frame, y_hold, chosen_proba, chosen_choice, params
    )
    report |= details
    report["calibrator"] = _calibration_report(report["candidates"][chosen.name])
    report["cv"] = _cross_validate(workdir, frame, labels, split, chosen, params)
    report["plots"] = _plots(workdir, transformer, chosen, y_hold, chosen_proba, chosen_choice, params)
    bundle = ModelBundle(
        spec=spec,
        transformer=transformer,
        classifier=chosen.classifier,
        threshold=chosen_choice.threshold,
        candidate=chosen.name,
        metadata={"feature_set_version": spec.feature_set_version(), "training": training},
    )
    training_rows = frame[~holdout & ~validation]
    bundle.metadata["golden"] = golden_requests(
        bundle, synthetic_rows(training_rows, spec, seed=params.split.seed)
    )
    profile = reference_profile(bundle, frame[~holdout], params)  # fit + validation, never the holdout
    bundle.metadata["reference_profile"] = profile.to_dict()
    write_json(workdir.reference_profile, profile.to_dict())
    save_bundle(bundle, workdir.bundle)
    write_json(workdir.metrics, report)
    card = model_card_data(workdir, report, training, params, slices, fairness)
    with workdir.model_card_data.open("wb") as handle:
        pickle.dump(card, handle)
    workdir.model_card.write_text(render_model_card(card))
    m = report["candidates"][chosen.name]["holdout"]
    logger.info(
        "evaluated %s on %d holdout rows: ROC AUC %.4f, PR AUC %.4f, threshold %.3f, CV ROC AUC %s",
        chosen.name,
        report["holdout_rows"],
        m["roc_auc"],
        m["pr_auc"],
        chosen_choice.threshold,
        f"{report['cv']['mean']:.4f}" if report["cv"] else "n/a",
    )
    return report


def _evaluate_candidate(
    trained: TrainedCandidate,
    x_val: NDArray[np.float64],
    y_val: NDArray[np.int64],
    x_hold: NDArray[np.float64],
    y_hold: NDArray[np.int64],
    params: Params,
) -> tuple[TrainedCandidate, ThresholdChoice, NDArray[np.float64], dict[str, Any]]:
    """Calibrate on validation (the map with the lowest cross-fitted log loss), choose the threshold
    on the calibrated validation probabilities, and score the holdout before and after calibration."""
    raw_val = trained.classifier.predict_proba(x_val)
    calibration = choose_calibration(y_val, raw_val, seed=params.split.seed)
    choice = choose_threshold(y_val, calibration.apply(raw_val), params.business)
    raw_hold = trained.classifier.predict_proba(x_hold)
    proba = calibration.apply(raw_hold)
    bins = params.evaluation.calibration_bins
    metrics = classification_metrics(y_hold, proba, choice.threshold, bins)
    before = classification_metrics(y_hold, raw_hold, choice.threshold, bins)
    entry = {
        "holdout": metrics,
        "threshold": choice.threshold,
        "calibration": calibration.to_dict()
        | {f"{k}_uncalibrated": before[k] for k in ("ece", "log_loss", "brier", "roc_auc")},
    }
    served = dataclasses.replace(trained, classifier=calibrated(trained.classifier, calibration))
    return served, choice, proba, entry


def _calibration_report(entry: dict[str, Any]) -> dict[str, Any]:
    """The chosen candidate's calibration: the map and the holdout ECE, log loss and Brier before/after."""
    calibration, holdout = entry["calibration"], entry["holdout"]
    out: dict[str, Any] = {
        "method": calibration["method"],
        "validation_log_loss": calibration["validation_log_loss"],
    }
    for metric in ("ece", "log_loss", "brier"):
        out[f"{metric}_before"] = calibration[f"{metric}_uncalibrated"]
        out[f"{metric}_after"] = holdout[metric]
    return out


def reference_profile(bundle: ModelBundle, training_rows: pd.DataFrame, params: Params) -> ReferenceProfile:
    """What the model's training part (fit + validation rows, never the holdout) and its probabilities on
    it look like: served traffic is compared with this (drift)."""
    proba = bundle.predict_proba(training_rows)
    rare = params.features.min_pii_category_count
    profile = params.monitoring.profile.model_dump()
    return build_profile(training_rows, bundle.spec, proba, **profile, min_pii_count=rare)


def golden_requests(bundle: ModelBundle, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw feature records with the probability the trained model gives them: a loaded copy of the
    model must reproduce these before it may serve (readiness and blue/green swaps)."""
    features = rows[bundle.spec.feature_columns].astype(object)
    records = features.where(features.notna(), None).to_dict(orient="records")
    expected = bundle.predict_proba(rows)
    return [
        {
            "features": {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()},
            "probability": float(p),
        }
        for record, p in zip(records, expected, strict=True)
    ]


def _chosen_details(
    spec: DatasetSpec,
    holdout: pd.DataFrame,
    y: NDArray[np.int64],
    proba: NDArray[np.float64],
    choice: ThresholdChoice,
    params: Params,
) -> tuple[dict[str, Any], dict[str, list[SliceResult]], dict[str, FairnessGap]]:
    """Business threshold, calibration, slices and fairness gaps of the chosen candidate."""
    threshold = choice.threshold
    slices = slice_metrics({c: holdout[c].to_numpy() for c in spec.slices}, y, proba, threshold)
    # A group this small is a handful of identifiable customers: left out of the report and the card.
    rare = params.features.min_pii_category_count
    groups = {c: _pii_groups(spec, holdout, c) for c in spec.pii}
    fairness = fairness_gaps(groups, y, proba, threshold, min_count=rare)
    curve = reliability_curve(y, proba, params.evaluation.calibration_bins)
    details = {
        "threshold": choice.to_dict(),
        "calibration": curve.to_dict(),
        "slices": {c: [r.to_dict() for r in rows] for c, rows in slices.items()},
        "fairness": {c: gap.to_dict() for c, gap in fairness.items()},
    }
    return details, slices, fairness


def _pii_groups(spec: DatasetSpec, frame: pd.DataFrame, column: str) -> NDArray[Any]:
    values = frame[column].to_numpy()
    if column in spec.features.numerical:
        return bucket_numeric(values.astype(np.float64))
    return values


def _cross_validate(
    workdir: Workdir,
    frame: pd.DataFrame,
    labels: NDArray[np.int64],
    split: NDArray[np.str_],
    chosen: TrainedCandidate,
    params: Params,
) -> dict[str, Any] | None:
    """k-fold ROC AUC of the chosen candidate on the training part (holdout untouched)."""
    folds = params.evaluation.cv_folds
    if folds < 2:
        return None
    from sklearn.metrics import roc_auc_score

    spec = workdir.read_spec()
    rows = np.flatnonzero(split != HOLDOUT)
    if len(rows) > params.evaluation.cv_max_rows:
        rows = np.random.default_rng(params.split.seed).choice(
            rows, params.evaluation.cv_max_rows, replace=False
        )
    scores = []
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=params.split.seed)
    for fit_idx, test_idx in kfold.split(rows, labels[rows]):
        fit_rows, test_rows = frame.iloc[rows[fit_idx]], frame.iloc[rows[test_idx]]
        transformer = FeatureTransformer(spec, params.features).fit(fit_rows)
        model = _refit(workdir, chosen, params, transformer.transform(fit_rows), labels[rows[fit_idx]])
        proba = model.predict_proba(transformer.transform(test_rows))
        scores.append(float(roc_auc_score(labels[rows[test_idx]], proba)))
    return {
        "folds": folds,
        "rows": len(rows),
        "roc_auc": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
    }


def _refit(
    workdir: Workdir, trained: TrainedCandidate, params: Params, x: NDArray[np.float64], y: NDArray[np.int64]
) -> Classifier:
    """The candidate refitted on other rows with its parameters and iteration count (a blend: each
    member, with the blend's weights)."""
    base = uncalibrated(trained.classifier)
    if isinstance(base, BlendClassifier):
        linear, tree = (_refit(workdir, load_candidate(workdir, name), params, x, y) for name in base.names)
        return BlendClassifier(linear, tree, base.weights, base.names)  # type: ignore[arg-type]
    candidate = trained.config or _candidate_params(params, trained.name)
    return refit_fixed(candidate, trained.best_iteration, x, y)


def _candidate_params(params: Params, name: str) -> CandidateParams:
    return next(c for c in params.training.candidates if c.name == name)


def raw_importance(transformer: FeatureTransformer, values: NDArray[np.float64]) -> dict[str, float]:
    """Output-column importance summed back onto the spec's raw features (crosses split evenly)."""
    totals: dict[str, float] = {}
    for sources, value in zip(transformer.output_sources, values, strict=True):
        for source in sources:
            totals[source] = totals.get(source, 0.0) + float(value) / len(sources)
    return totals


def _plots(
    workdir: Workdir,
    transformer: FeatureTransformer,
    chosen: TrainedCandidate,
    y: NDArray[np.int64],
    proba: NDArray[np.float64],
    choice: ThresholdChoice,
    params: Params,
) -> dict[str, str]:
    out = workdir.evaluation_dir
    importance = raw_importance(transformer, chosen.classifier.importance())
    curve = reliability_curve(y, proba, params.evaluation.calibration_bins)
    paths = {
        "ROC curve": plots.plot_roc(y, proba, out / "roc.png", label=chosen.name),
        "Precision-recall curve": plots.plot_pr(y, proba, out / "pr.png", label=chosen.name),
        "Calibration": plots.plot_calibration(curve, out / "calibration.png"),
        "Feature importance": plots.plot_importance(
            list(importance), list(importance.values()), out / "importance.png"
        ),
        "Expected profit by threshold": plots.plot_profit(choice, out / "profit.png"),
    }
    return {caption: path.name for caption, path in paths.items()}


def model_card_data(
    workdir: Workdir,
    report: dict[str, Any],
    training: dict[str, Any],
    params: Params,
    slices: dict[str, list[SliceResult]],
    fairness: dict[str, FairnessGap],
) -> ModelCardData:
    """Card contents from the evaluation report (the register step fills in name and version)."""
    meta = workdir.read_meta()
    chosen = report["chosen"]
    cv = report.get("cv")
    return ModelCardData(
        model_name=f"churn-{meta['spec']['name']}",
        model_version="(unregistered)",
        spec_name=meta["spec"]["name"],
        n_rows=meta["rows"],
        data_hash=meta["content_hash"],
        feature_set_version=meta["feature_set_version"],
        candidates=[
            CandidateSummary(name, c["validation"]["roc_auc"], c["seconds"], _parameters(c))
            for name, c in training["candidates"].items()
        ],
        chosen_candidate=chosen,
        holdout_metrics=report["candidates"][chosen]["holdout"],
        threshold=report["threshold"]["threshold"],
        expected_profit=report["threshold"]["expected_profit"],
        contacted_fraction=report["threshold"]["contacted_fraction"],
        business=params.business.model_dump(),
        n_holdout=report["holdout_rows"],
        cv_roc_auc_mean=cv["mean"] if cv else None,
        cv_roc_auc_std=cv["std"] if cv else None,
        cv_folds=cv["folds"] if cv else None,
        slices=slices,
        fairness=fairness,
        plots=report["plots"],
        calibration_method=report["calibrator"]["method"],
        ece_uncalibrated=report["calibrator"]["ece_before"],
    )


def _parameters(entry: dict[str, Any]) -> str:
    """How a candidate's parameters were set, for the card's candidate table."""
    if entry.get("blend"):
        return "blend of " + " + ".join(f"{w:.2f} x {n}" for n, w in entry["blend"]["weights"].items())
    search = entry.get("search")
    if not search:
        return "default"
    searched = "searched" if entry.get("source") == "search" else "default (kept after search)"
    return f"{searched}, {search['trials']} trials in {search['seconds']:.0f} s"

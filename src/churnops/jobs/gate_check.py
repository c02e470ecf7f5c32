"""Measure the promotion gates' evidence for one version against the champion, and judge it.

Evaluation rows: the candidate's holdout (from the working directory of the run that registered
it) less every customer the champion trained on (its recorded training-set membership), so the
paired AUC test and the profit comparison score both models on rows neither has seen. Latency
and golden requests are measured on the compiled model, the one serving runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from churnops.core.auc import roc_auc
from churnops.core.bundle import ModelBundle
from churnops.core.fairness import bucket_numeric
from churnops.core.fast_model import FastModel
from churnops.core.gates import GateEvidence, GateVerdict, PolicyResult, evaluate_gates
from churnops.core.metrics import check_scores
from churnops.core.params import Params
from churnops.core.performance_stats import expected_auc
from churnops.core.schema import target_labels
from churnops.core.split import HOLDOUT
from churnops.errors import ChurnopsError, NotFound
from churnops.io.registry import CHAMPION, MlflowRegistry
from churnops.jobs.featurize import load_split
from churnops.jobs.version_files import WORKDIR_TAG, membership
from churnops.jobs.workdir import Workdir, read_json

logger = logging.getLogger(__name__)

GOLDEN_TOLERANCE = 1e-6
LATENCY_CALLS = 200  # single-row calls timed (golden requests, round-robin) after a warm-up
MIN_EVALUATION_ROWS = 100


@dataclass(frozen=True)
class GateCheck:
    """The verdicts for `version` against `champion`, and what they were measured on."""

    model: str
    version: str
    champion: str | None
    result: PolicyResult
    evaluation: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # the candidate's AUC and expected AUC here
    measured_at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        return self.result.status

    def first_failure(self) -> str:
        failed = self.result.failed
        return f"gate {failed[0].name} failed: {failed[0].reason}" if failed else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "champion": self.champion,
            **self.result.to_dict(),
            "evaluation": self.evaluation,
            "reference": self.reference,
            "measured_at": self.measured_at,
        }


@dataclass(frozen=True)
class EvaluationRows:
    frame: pd.DataFrame
    y: NDArray[np.int64]
    detail: dict[str, Any]


def check_gates(
    registry: MlflowRegistry,
    params: Params,
    name: str,
    version: str,
    *,
    champion: str | bool | None = True,
    workdir: Workdir | None = None,
    pseudonym_key: bytes,
) -> GateCheck:
    """Run every gate of `params.gates` on `version`; `champion=True` compares with the current champion
    (none when `version` is the champion itself), a version string with that one, None with nobody."""
    if not registry.version_exists(name, version):
        raise NotFound(f"{name} has no version {version!r}")
    baseline = _baseline(registry, name, version, champion)
    candidate = registry.load_bundle(name, version)
    try:
        rows = evaluation_rows(registry, name, version, candidate, baseline, workdir, pseudonym_key)
    except ChurnopsError as err:
        return _unmeasurable(params, name, version, baseline, str(err))
    proba = candidate.predict_proba(rows.frame)
    champion_proba, champion_threshold, champion_problem = _champion_scores(registry, name, baseline, rows)
    latencies, golden_ok = compiled_checks(candidate)
    evidence = GateEvidence(
        y_true=rows.y,
        candidate_proba=proba,
        candidate_threshold=candidate.threshold,
        champion_proba=champion_proba,
        champion_threshold=champion_threshold,
        groups=protected_groups(candidate, rows.frame),
        latencies_ms=latencies,
        golden_reproduced=golden_ok,
        validation_passed=_validation_passed(rows.detail.get("workdir")),
    )
    result = evaluate_gates(params.gates, evidence, params.business)
    if champion_problem is not None:
        result = _fail_comparisons(result, champion_problem)
    return GateCheck(name, version, baseline, result, rows.detail, _reference(rows.y, proba))


def _baseline(registry: MlflowRegistry, name: str, version: str, champion: str | bool | None) -> str | None:
    if champion is True:
        current = registry.alias_version(name, CHAMPION)
        return None if current == version else current
    if champion is False:
        return None
    return champion


def evaluation_rows(
    registry: MlflowRegistry,
    name: str,
    version: str,
    candidate: ModelBundle,
    champion: str | None,
    workdir: Workdir | None,
    pseudonym_key: bytes,
) -> EvaluationRows:
    """The candidate's holdout rows less the champion's training customers."""
    workdir = workdir or _recorded_workdir(registry, name, version)
    spec = candidate.spec
    frame = workdir.read_training_frame()
    holdout = frame[load_split(workdir).to_numpy() == HOLDOUT].reset_index(drop=True)
    detail: dict[str, Any] = {"workdir": str(workdir.root), "holdout_rows": len(holdout)}
    if champion is not None:
        members = membership(registry, name, champion)
        if members is None:
            detail["champion_training_set"] = f"v{champion} kept no training-set record: rows not filtered"
        else:
            seen = members.contains(pseudonym_key, holdout[spec.id_column].astype(str))
            detail["excluded_champion_training_rows"] = int(seen.sum())
            holdout = holdout[~seen].reset_index(drop=True)
    detail["rows"] = len(holdout)
    y = target_labels(holdout, spec)
    if len(holdout) < MIN_EVALUATION_ROWS or y.min(initial=1) == y.max(initial=0):
        raise NotFound(
            f"only {len(holdout)} evaluation rows that neither v{version} nor the champion trained on"
            f" (need {MIN_EVALUATION_ROWS} with both outcomes)"
        )
    detail["positives"] = int(y.sum())
    return EvaluationRows(holdout, y, detail)


def _recorded_workdir(registry: MlflowRegistry, name: str, version: str) -> Workdir:
    tags = registry.version_tags(name, version)
    recorded = tags.get(WORKDIR_TAG)
    if recorded is None:
        raise NotFound(f"v{version} has no evaluation data: it was not registered by the pipeline")
    workdir = Workdir(Path(recorded))
    if not workdir.snapshot_meta.is_file():
        raise NotFound(f"v{version}'s evaluation data is gone ({recorded} was removed)")
    if workdir.read_meta().get("content_hash") != tags.get("dataset.content_hash"):
        raise NotFound(f"v{version}'s working directory {recorded} now holds another run's data")
    return workdir


def _champion_scores(
    registry: MlflowRegistry, name: str, champion: str | None, rows: EvaluationRows
) -> tuple[NDArray[np.float64] | None, float | None, str | None]:
    if champion is None:
        return None, None, None
    try:
        bundle = registry.load_bundle(name, champion)
        return bundle.predict_proba(rows.frame), bundle.threshold, None
    except (ChurnopsError, KeyError, ValueError) as err:
        logger.warning("champion v%s cannot score the evaluation rows: %s", champion, err)
        return None, None, f"champion v{champion} cannot score these rows: {err}"


def _fail_comparisons(result: PolicyResult, problem: str) -> PolicyResult:
    """Discrimination and profit compared with nobody would be wrong: both fail, saying why."""
    verdicts = tuple(
        replace(v, passed=False, value=None, reason=problem, detail={"missing": "champion scores"})
        if v.name in ("discrimination", "profit")
        else v
        for v in result.verdicts
    )
    return PolicyResult(verdicts, result.approval_required)


def compiled_checks(bundle: ModelBundle) -> tuple[list[float], bool]:
    """Single-row latencies (ms) of the compiled model on the golden requests, and whether it
    reproduces every golden probability."""
    golden = bundle.metadata.get("golden") or []
    if not golden:
        return [], False
    fast = FastModel.build(bundle.classifier, bundle.transformer.output_sources, bundle.spec.feature_columns)
    fast.warm_up()
    row = np.zeros(bundle.transformer.n_outputs, dtype=np.float64)

    def score(record: dict[str, Any]) -> float:
        bundle.transformer.transform_one(record, out=row)
        return fast.score_one(row)[0]

    reproduced = all(
        math.isclose(score(case["features"]), case["probability"], abs_tol=GOLDEN_TOLERANCE)
        for case in golden
    )
    for case in golden:  # warm caches before timing
        score(case["features"])
    latencies = []
    for i in range(LATENCY_CALLS):
        started = time.perf_counter()
        score(golden[i % len(golden)]["features"])
        latencies.append((time.perf_counter() - started) * 1e3)
    return latencies, reproduced


def protected_groups(bundle: ModelBundle, frame: pd.DataFrame) -> dict[str, NDArray[Any]]:
    """Group labels per PII column (numerical ones bucketed, as in the evaluation report)."""
    spec = bundle.spec
    return {
        column: bucket_numeric(frame[column].to_numpy(dtype=np.float64))
        if column in spec.features.numerical
        else frame[column].to_numpy()
        for column in spec.pii
    }


def _validation_passed(workdir: str | None) -> bool | None:
    if workdir is None:
        return None
    report = Workdir(Path(workdir)).validation_dir / "validation.json"
    return bool(read_json(report).get("success")) if report.is_file() else None


def _reference(y: NDArray[np.int64], proba: NDArray[np.float64]) -> dict[str, Any]:
    labels, scores = check_scores(y, proba)
    return {"auc": roc_auc(labels, scores), "expected_auc": expected_auc(scores), "rows": int(labels.size)}


def _unmeasurable(params: Params, name: str, version: str, champion: str | None, problem: str) -> GateCheck:
    """No evaluation rows: every gate that needs them fails with the reason; golden still runs."""
    policy = params.gates
    names = [n for n in ("discrimination", "calibration", "profit") if getattr(policy, n) is not None]
    names += ["fairness.demographic_parity", "fairness.equal_opportunity"] if policy.fairness else []
    verdicts = [GateVerdict(n, None, None, False, {"missing": "evaluation rows"}, problem) for n in names]
    return GateCheck(name, version, champion, PolicyResult(tuple(verdicts), policy.approval == "required"))

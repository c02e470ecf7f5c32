"""MLflow adapter: candidate runs with lineage, the registered pyfunc model, aliases, listings."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from churnops.core.bundle import ModelBundle
from churnops.errors import NotFound, RegistryError
from churnops.io.registry_lookup import VersionRecord

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROFILE_TAG = "churnops.reference_profile"  # version tag: the fingerprint of its reference profile
PROFILE_ARTIFACT = "monitoring/reference_profile.json"
STATUS_TAG = "churnops.status"  # candidate | champion | pending_approval | in_trial | rejected | retired
LISTED_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "precision", "recall")
# Dependencies of the pyfunc model, listed so MLflow does not spend 8-17 s inferring them.
PIP_REQUIREMENTS = ["numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "pyarrow", "churnops"]


def _signature(columns: list[str]) -> Any:
    """Every raw feature optional and of any type: the bundled transformer coerces values
    itself (ints, floats, numeric text, nulls) exactly as it does when serving."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name, required=False) for name in columns])  # type: ignore[no-untyped-call]
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "churn_probability")]))


def version_status(stored: str | None, aliases: Sequence[str]) -> str:
    """The champion is `champion` whatever its tag says; a former champion is `retired`; else the tag
    the promotion path left (`pending_approval`, `in_trial`, `rejected`, `candidate`)."""
    if CHAMPION in aliases:
        return CHAMPION
    if stored == CHAMPION:
        return "retired"
    return stored or "candidate"


def choose_model_name(names: Sequence[str], requested: str | None) -> str:
    """The requested model name, or the only registered model; otherwise ask for one."""
    if requested:
        if requested not in names:
            known = ", ".join(names) or "none"
            raise NotFound(f"no registered model named {requested!r} (registered: {known})")
        return requested
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFound("no registered model yet: run `churnops pipeline run` first")
    raise RegistryError(f"several registered models ({', '.join(names)}): choose one with --model")


class MlflowRegistry:
    """Tracking and registry on one URI (SQLite + local artifacts by default, or an MLflow server)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None, experiment: str = "churnops") -> None:
        # Every HTTP call to a tracking server gets a bounded timeout and few retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        # No mlflow.set_tracking_uri here: it is process-wide and also rewrites MLFLOW_TRACKING_URI
        # in os.environ, which Settings read. Every call below names its URI explicitly.
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.artifact_root = artifact_root
        self.experiment = experiment

    # -- runs ------------------------------------------------------------------------

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            location = (self.artifact_root / self.experiment).as_uri()
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> Iterator[str]:
        """An MLflow run that ends FAILED when its body raises."""
        run_tags = dict(tags) | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
        run = self.client.create_run(self.experiment_id(), tags=run_tags, run_name=name)
        run_id = str(run.info.run_id)
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_run_data(
        self,
        run_id: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        artifacts: Sequence[Path] = (),
        artifact_path: str | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        for path in artifacts:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_child_runs(
        self, parent_run_id: str, tags: Mapping[str, str], runs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Many small finished runs under one parent (search trials): per run one create, one batch
        of params, metrics and tags, one end; no artifacts. Each mapping holds `name`, `params`,
        `metrics`, `tags`, `status` (FINISHED, KILLED, FAILED), `start_ms` and `end_ms`."""
        from mlflow.entities import Metric, Param

        experiment = self.experiment_id()
        for spec in runs:
            run_tags = dict(tags) | dict(spec.get("tags", {})) | {"mlflow.parentRunId": parent_run_id}
            start, end = int(spec["start_ms"]), int(spec["end_ms"])
            run = self.client.create_run(experiment, start_time=start, tags=run_tags, run_name=spec["name"])
            run_id = str(run.info.run_id)
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(k, float(v), end, 0)
                    for k, v in spec.get("metrics", {}).items()
                    if not math.isnan(v)
                ],
                params=[Param(k, str(v)[:6000]) for k, v in spec.get("params", {}).items()],
            )
            self.client.set_terminated(run_id, status=str(spec.get("status", "FINISHED")), end_time=end)

    # -- models ----------------------------------------------------------------------

    def log_model(
        self, run_id: str, bundle_path: Path, model_name: str, input_example: Any, tags: Mapping[str, str]
    ) -> str:
        """Log the pyfunc model in `run_id`, register it under `model_name`; returns the version."""
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        from churnops.io.pyfunc_model import BUNDLE_ARTIFACT, ChurnModel

        # log_model and the registry's check of the logged model follow the process-wide URI:
        # set it for this call, then restore it.
        with _use_tracking_uri(self.tracking_uri):
            with self.mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                info = self.mlflow.pyfunc.log_model(
                    name="model",
                    python_model=ChurnModel(),
                    artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
                    pip_requirements=PIP_REQUIREMENTS,
                    signature=_signature(list(input_example.columns)),
                    input_example=input_example,
                )
            self._ensure_registered(model_name)
            version = self.client.create_model_version(
                model_name, info.model_uri, run_id=run_id, tags=dict(tags)
            )
        return str(version.version)

    def _ensure_registered(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model_name)
        except MlflowException:
            self.client.create_registered_model(
                model_name,
                description="Churn model registered by churnops (pyfunc: raw rows -> probability).",
            )

    def alias_version(self, model_name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException:
            return None

    def alias_tags(self, model_name: str, alias: str) -> dict[str, str]:
        """Tags of the version an alias points at (lineage: feature set, dataset hash...); {} if unset."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_model_version_by_alias(model_name, alias).tags or {})
        except MlflowException:
            return {}

    def alias_run_params(self, model_name: str, alias: str) -> tuple[str, dict[str, str]] | None:
        """The version an alias points at and the params logged in its run (None when unset)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(model_name, alias)
            if not mv.run_id:
                return None
            return str(mv.version), dict(self.client.get_run(mv.run_id).data.params)
        except MlflowException:
            return None

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        if self.alias_version(model_name, alias) is not None:
            self.client.delete_registered_model_alias(model_name, alias)

    def resolve_name(self, requested: str | None) -> str:
        """The requested model name, or the only registered model; otherwise ask for one."""
        return choose_model_name(self.model_names(), requested)

    def version_record(self, model_name: str, ref: str) -> VersionRecord | None:
        """The version `ref` (a number or an alias) names, or None when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.isdigit():
                mv = self.client.get_model_version(model_name, ref)
            else:
                mv = self.client.get_model_version_by_alias(model_name, ref)
        except MlflowException:
            return None
        return VersionRecord(
            name=str(mv.name),
            version=str(mv.version),
            run_id=mv.run_id or None,
            created_ms=int(mv.creation_timestamp),
            source=str(mv.source),
            storage_location=None,
        )

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def version_exists(self, model_name: str, version: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(model_name, version)
        except MlflowException:
            return False
        return True

    def list_versions(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """Every version as `{name, version, aliases, metrics, threshold, dataset, run_id}`, newest first."""
        names = [model_name] if model_name else self.model_names()
        listed: list[dict[str, Any]] = []
        for name in names:
            # Search results leave `aliases` empty on some stores: read them from the model itself.
            aliases = self.client.get_registered_model(name).aliases or {}
            versions = self.client.search_model_versions(f"name = '{name}'")
            listed.extend(
                self._describe(mv, sorted(a for a, v in aliases.items() if str(v) == str(mv.version)))
                for mv in sorted(versions, key=lambda v: -int(v.version))
            )
        return listed

    def _describe(self, mv: Any, aliases: list[str]) -> dict[str, Any]:
        metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        tags = mv.tags or {}
        threshold = tags.get("threshold")
        return {
            "name": mv.name,
            "version": str(mv.version),
            "aliases": aliases,
            "metrics": {k: metrics.get(k) for k in LISTED_METRICS},
            "threshold": float(threshold) if threshold is not None else None,
            "dataset": {
                "spec": tags.get("dataset.spec"),
                "content_hash": tags.get("dataset.content_hash"),
                "rows": int(tags["dataset.rows"]) if "dataset.rows" in tags else None,
            },
            "run_id": mv.run_id,
            "status": version_status(tags.get(STATUS_TAG), aliases),
        }

    # -- per-version tags and files (gate evidence, training-set membership) -------------------

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_model_version(model_name, version).tags or {})
        except MlflowException as err:
            raise NotFound(f"{model_name} has no version {version}") from err

    def save_reference_profile(self, model_name: str, version: str, profile: Mapping[str, Any]) -> str:
        """Log a version's reference profile as an artifact of its run and tag the version with its
        fingerprint; returns the fingerprint."""
        from churnops.core.drift_profile import ReferenceProfile

        parsed = ReferenceProfile.from_dict(profile)
        run_id = self.client.get_model_version(model_name, version).run_id
        if not run_id:
            raise RegistryError(f"{model_name} v{version} has no run to keep its reference profile in")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(PROFILE_ARTIFACT).name
            path.write_text(json.dumps(parsed.to_dict(), sort_keys=True))
            self.client.log_artifact(run_id, str(path), str(Path(PROFILE_ARTIFACT).parent))
        fingerprint = parsed.fingerprint()
        self.client.set_model_version_tag(model_name, version, PROFILE_TAG, fingerprint)
        return fingerprint

    def reference_profile(self, model_name: str, version: str) -> dict[str, Any] | None:
        """The profile `save_reference_profile` kept for a version (None when it has none)."""
        if PROFILE_TAG not in self.version_tags(model_name, version):
            return None
        run_id = self.client.get_model_version(model_name, version).run_id
        with tempfile.TemporaryDirectory() as tmp:
            local = self.mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PROFILE_ARTIFACT, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return dict(json.loads(Path(local).read_text()))

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, str(value)[:5000])

    def log_version_file(self, model_name: str, version: str, path: Path, artifact_dir: str) -> None:
        """Keep a file in the run that produced a version (MLflow keeps version artifacts per run)."""
        run_id = self.client.get_model_version(model_name, version).run_id
        if not run_id:
            raise RegistryError(f"{model_name} v{version} has no run to keep {path.name} in")
        self.client.log_artifact(run_id, str(path), artifact_dir)

    def version_file(self, model_name: str, version: str, artifact_path: str, dst: Path) -> Path | None:
        """Download a file `log_version_file` kept (None when the version has none)."""
        run_id = self.client.get_model_version(model_name, version).run_id
        if not run_id:
            return None
        parent, _, name = artifact_path.rpartition("/")
        if name not in {Path(f.path).name for f in self.client.list_artifacts(run_id, parent or None)}:
            return None
        local = self.mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(local)

    def _artifact_location(self, model_name: str, version: str) -> str:
        """Where a version's files live, resolved with this client (never the process-wide URIs)."""
        source = str(self.client.get_model_version_download_uri(model_name, version))
        if source.startswith("models:/m-"):  # MLflow 3 logged model: ask its own record
            return str(self.client.get_logged_model(source.removeprefix("models:/")).artifact_location)
        return source

    def load_bundle(self, model_name: str, ref: str) -> ModelBundle:
        """The ModelBundle of `models:/NAME@alias` or `models:/NAME/version`."""
        from churnops.io.pyfunc_model import BUNDLE_FILE, load_bundle

        uri = f"models:/{model_name}@{ref}" if not ref.isdigit() else f"models:/{model_name}/{ref}"
        try:
            # Resolved through this registry's own client: MLflow's process-wide tracking URI may
            # point elsewhere (it is a global, and set per thread context).
            version = ref if ref.isdigit() else self.alias_version(model_name, ref)
            if version is None:
                raise RegistryError(f"{uri}: alias {ref!r} is not set")
            source = self._artifact_location(model_name, version)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(
                    self.mlflow.artifacts.download_artifacts(
                        artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri
                    )
                )
                found = next(local.rglob(BUNDLE_FILE), None)
                if found is None:
                    raise RegistryError(f"{uri} has no {BUNDLE_FILE}: not a churnops model")
                bundle = load_bundle(found)
            if "reference_profile" not in bundle.metadata:  # trained before profiles, maybe backfilled
                backfilled = self.reference_profile(model_name, version)
                if backfilled is not None:
                    bundle.metadata["reference_profile"] = backfilled
            return bundle
        except RegistryError:
            raise
        except Exception as err:
            raise RegistryError(f"cannot load {uri}: {err}") from err

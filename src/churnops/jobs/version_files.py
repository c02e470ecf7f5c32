"""What the lifecycle keeps with each registered version, in the MLflow run that produced it.

- `lifecycle/training_members.bin`: the customers it trained on (keyed hashes, core.membership),
  so a later candidate is compared with it on rows neither saw.
- `lifecycle/validation_reference.json`: the profile of its training data that later data is
  validated against while it is champion (restored to `$CHURNOPS_HOME/reference/` on every move).
- `monitoring/reference_profile.json` (+ tag `churnops.reference_profile`): the drift reference
  of its training part, unless the bundle carries one (the monitoring branch writes both the same
  way; this is the hook it replaces).
- `lifecycle/gates.json`: the latest gate verdicts and what they were measured on.
- tag `churnops.workdir`: the run's own working directory (its evaluation rows live there).

None of these holds a customer id or a rare PII value.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.core.drift_profile import ReferenceProfile, build_profile
from churnops.core.expectations import profile_reference
from churnops.core.membership import Membership
from churnops.core.params import Params
from churnops.core.spec import DatasetSpec
from churnops.core.split import HOLDOUT
from churnops.io.pyfunc_model import load_bundle
from churnops.io.registry import MlflowRegistry
from churnops.jobs.featurize import load_split
from churnops.jobs.validate import reference_path
from churnops.jobs.workdir import Workdir

logger = logging.getLogger(__name__)

MEMBERSHIP = "lifecycle/training_members.bin"
VALIDATION_REFERENCE = "lifecycle/validation_reference.json"
GATES = "lifecycle/gates.json"
PROFILE = "monitoring/reference_profile.json"
PROFILE_TAG = "churnops.reference_profile"
WORKDIR_TAG = "churnops.workdir"


def record_registration(
    registry: MlflowRegistry, name: str, version: str, workdir: Workdir, params: Params, pseudonym_key: bytes
) -> dict[str, Any]:
    """Keep membership, validation reference and drift profile of a newly registered version."""
    spec, frame = workdir.read_spec(), workdir.read_training_frame()
    trained = frame[load_split(workdir).to_numpy() != HOLDOUT]
    members = Membership.of(pseudonym_key, trained[spec.id_column].astype(str))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _put(registry, name, version, MEMBERSHIP, root, members.to_bytes())
        validation = profile_reference(workdir.read_snapshot(), spec, params.features.min_pii_category_count)
        _put(registry, name, version, VALIDATION_REFERENCE, root, validation.model_dump_json().encode())
        bundle = load_bundle(workdir.bundle)
        if "reference_profile" not in bundle.metadata:
            profile = drift_profile(trained, spec, bundle.predict_proba(trained), params)
            _put(
                registry, name, version, PROFILE, root, json.dumps(profile.to_dict(), sort_keys=True).encode()
            )
            registry.set_version_tags(name, version, {PROFILE_TAG: profile.fingerprint()})
    registry.set_version_tags(name, version, {WORKDIR_TAG: str(workdir.root.resolve())})
    return {"training_members": len(members)}


def drift_profile(trained: pd.DataFrame, spec: DatasetSpec, proba: Any, params: Params) -> ReferenceProfile:
    """The drift reference of the training part; a PII category rarer than `min_pii_category_count`
    counts as missing, so the profile never names it."""
    frame = trained.copy()
    rare = params.features.min_pii_category_count
    for column in spec.pii:
        if column in spec.features.categorical:
            counts = frame[column].map(frame[column].value_counts())
            frame[column] = frame[column].where(counts >= rare)
    return build_profile(frame, spec, proba)


def membership(registry: MlflowRegistry, name: str, version: str) -> Membership | None:
    data = _get(registry, name, version, MEMBERSHIP)
    return None if data is None else Membership.from_bytes(data)


def reference_profile(
    registry: MlflowRegistry, name: str, version: str, metadata: dict[str, Any] | None = None
) -> ReferenceProfile | None:
    """The version's drift reference: from its bundle's metadata, else the artifact."""
    if metadata is not None and "reference_profile" in metadata:
        return ReferenceProfile.from_dict(metadata["reference_profile"])
    data = _get(registry, name, version, PROFILE)
    return None if data is None else ReferenceProfile.from_dict(json.loads(data))


def restore_validation_reference(
    registry: MlflowRegistry, home: Path, name: str, version: str
) -> Path | None:
    """Make the champion's training-data profile the one later data is validated against."""
    data = _get(registry, name, version, VALIDATION_REFERENCE)
    if data is None:
        logger.warning(
            "%s v%s keeps no validation reference: later data is validated as before", name, version
        )
        return None
    spec_name = json.loads(data)["spec_name"]
    path = reference_path(home, spec_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def save_gates(registry: MlflowRegistry, name: str, version: str, payload: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _put(
            registry,
            name,
            version,
            GATES,
            Path(tmp),
            json.dumps(payload, sort_keys=True, default=str).encode(),
        )


def load_gates(registry: MlflowRegistry, name: str, version: str) -> dict[str, Any] | None:
    data = _get(registry, name, version, GATES)
    return None if data is None else dict(json.loads(data))


def _put(registry: MlflowRegistry, name: str, version: str, artifact: str, root: Path, data: bytes) -> None:
    folder, _, filename = artifact.rpartition("/")
    path = root / filename
    path.write_bytes(data)
    registry.log_version_file(name, version, path, folder)


def _get(registry: MlflowRegistry, name: str, version: str, artifact: str) -> bytes | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.version_file(name, version, artifact, Path(tmp))
        return None if path is None else path.read_bytes()

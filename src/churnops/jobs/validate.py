"""Validate: run the expectation suite derived from the spec and a reference profile; gate the pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from churnops.core.expectations import (
    ReferenceProfile,
    build_expectations,
    builtin_reference,
    profile_reference,
)
from churnops.core.params import ValidationParams
from churnops.core.schema import unparseable_numeric
from churnops.core.spec import DatasetSpec
from churnops.errors import ValidationFailed
from churnops.io.validation import ValidationReport, validate_frame
from churnops.jobs.workdir import Workdir

logger = logging.getLogger(__name__)


def reference_path(home: Path, spec_name: str) -> Path:
    """Where the profile of the current champion's training data is kept."""
    return home / "reference" / f"{spec_name}.json"


def resolve_reference(home: Path, spec: DatasetSpec, frame: pd.DataFrame) -> tuple[ReferenceProfile, str]:
    """The champion's data profile, else the built-in one, else this data's own (structure-only checks)."""
    saved = reference_path(home, spec.name)
    if saved.is_file():
        return ReferenceProfile.model_validate_json(saved.read_text()), f"champion data ({saved})"
    builtin = builtin_reference(spec.name)
    if builtin is not None:
        return builtin, f"built-in reference of spec {spec.name!r}"
    logger.warning(
        "no reference profile for spec %r yet: categories and ranges come from this data", spec.name
    )
    return profile_reference(frame, spec), "this data (first run)"


def save_reference(home: Path, spec: DatasetSpec, frame: pd.DataFrame, min_pii_count: int = 1) -> Path:
    """Record the profile of data that produced a champion: later data is validated against it."""
    path = reference_path(home, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_reference(frame, spec, min_pii_count).model_dump_json(indent=2))
    return path


def validate(workdir: Workdir, params: ValidationParams, home: Path) -> ValidationReport:
    """Write the validation report; raise ValidationFailed with one line naming column and rule."""
    spec = workdir.read_spec()
    frame = workdir.read_snapshot()
    reference, source = resolve_reference(home, spec, frame)
    expectations = build_expectations(spec, reference, params)
    report = validate_frame(frame, spec, expectations, workdir.validation_dir)
    if not report.success:
        raise ValidationFailed(
            f"validation failed: {report.first_failure()} (report: {report.html_path})", report.html_path
        )
    bad_types = unparseable_numeric(frame, spec)
    if bad_types:  # belt and braces: the suite's type check should already have failed
        column, example = next(iter(bad_types.items()))
        raise ValidationFailed(f"validation failed: column {column!r} must be numeric, got {example!r}")
    logger.info(
        "validated %d rows against %s: %d expectations passed", len(frame), source, len(report.results)
    )
    return report

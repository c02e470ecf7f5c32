"""Data expectations derived from a dataset spec and a reference profile.

Pure domain: this module describes *what* to check as plain `ExpectationDef`s
named after Great Expectations classes; `churnops.io.validation` runs them.
Categorical values are compared as *category keys* (strings) so that a column
read as 0/1 integers in one file and 0.0/1.0 floats in another still matches.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from churnops.core.features import category_key
from churnops.core.params import ValidationParams
from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, DataError

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_SPEC_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_REFERENCE_SUFFIX = ".reference.json"
RANGE_MOSTLY = 0.99  # a handful of outliers beyond the widened range is normal, a shifted column is not

# pandas dtype names (numpy and nullable) that count as numeric; "int" and "float" also
# cover plain Python numbers inside object columns, which GX checks value by value.
NUMERIC_TYPES: tuple[str, ...] = (
    "int",
    "float",
    *(f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{kind}{bits}Dtype" for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
)


class NumericRange(BaseModel):
    """Observed [min, max] of a numeric column; None when the column was entirely null."""

    model_config = _FROZEN
    min: float | None
    max: float | None


class ReferenceProfile(BaseModel):
    """What clean reference data looked like: the baseline the expectations are built from."""

    model_config = _FROZEN
    spec_name: str
    row_count: int = Field(ge=0)
    numeric: dict[str, NumericRange]
    categories: dict[str, tuple[str, ...]]  # column -> sorted category keys
    target_values: tuple[str, ...]  # sorted category keys of the target


class ExpectationDef(BaseModel):  # type: ignore[no-redef]  # field `kwargs` vs the pydantic plugin
    """One check, named by its Great Expectations class, with a human rule for messages."""

    model_config = _FROZEN
    kind: str  # GX expectation class name, e.g. "ExpectColumnValuesToBeInSet"
    column: str | None = None  # None for table-level checks
    kwargs: dict[str, Any] = Field(default_factory=dict)
    rule: str  # e.g. "values must be one of the reference categories"


def to_category_keys(series: pd.Series) -> pd.Series:
    """Replace each non-null value by its category key; nulls stay null."""
    if isinstance(series.dtype, pd.StringDtype):
        return series  # already strings: nothing to normalise
    uniques = series.dropna().unique()
    # Map through the distinct values only: cheap on 100k+ rows with few categories.
    keys = {value: category_key(value) for value in uniques}  # the transformer's own keys: no skew
    return series.map(keys).astype(object)


def with_category_keys(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A copy of `frame` whose categorical and target columns hold category keys."""
    columns = [c for c in (*spec.features.categorical, spec.target.column) if c in frame.columns]
    return frame.assign(**{column: to_category_keys(frame[column]) for column in columns})


def profile_reference(frame: pd.DataFrame, spec: DatasetSpec, min_pii_count: int = 1) -> ReferenceProfile:
    """Profile a clean reference frame: numeric ranges, categories and target values.

    A PII column's category seen in fewer than `min_pii_count` rows is left out of the stored
    profile (it could single a customer out); later data holding it counts as unseen.
    """
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(f"reference data: missing spec column(s) {missing}")
    keyed = with_category_keys(frame, spec)
    return ReferenceProfile(
        spec_name=spec.name,
        row_count=len(frame),
        numeric={column: _numeric_range(frame[column]) for column in spec.features.numerical},
        categories={
            column: _sorted_keys(keyed[column], min_pii_count if column in spec.pii else 1)
            for column in spec.features.categorical
        },
        target_values=_sorted_keys(keyed[spec.target.column]),
    )


def _numeric_range(series: pd.Series) -> NumericRange:
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise DataError(f"reference data: column '{series.name}' is not numeric (dtype {series.dtype})")
    values = series.dropna()
    if values.empty:
        return NumericRange(min=None, max=None)
    return NumericRange(min=float(values.min()), max=float(values.max()))


def _sorted_keys(series: pd.Series, min_count: int = 1) -> tuple[str, ...]:
    counts = series.dropna().astype(str).value_counts()
    return tuple(sorted(str(v) for v, n in counts.items() if n >= min_count))


def build_expectations(
    spec: DatasetSpec, profile: ReferenceProfile, params: ValidationParams
) -> list[ExpectationDef]:
    """The expectation suite for `spec`, most fundamental checks first.

    Order matters: the first failing check is the one reported, so structure
    (columns, row count) comes before ids and target, which come before features.
    """
    if profile.spec_name != spec.name:
        raise ConfigError(f"reference profile is for spec '{profile.spec_name}', not '{spec.name}'")
    return [
        *(_column_exists(column) for column in spec.columns),
        _row_count(params),
        *_id_checks(spec.id_column),
        *_target_checks(spec, profile),
        *(check for column in spec.features.numerical for check in _numeric_checks(column, profile, params)),
        *(
            check
            for column in spec.features.categorical
            for check in _categorical_checks(column, profile, params)
        ),
    ]


def _column_exists(column: str) -> ExpectationDef:
    return ExpectationDef(kind="ExpectColumnToExist", column=column, rule="column must be present")


def _row_count(params: ValidationParams) -> ExpectationDef:
    if params.max_rows is None:
        rule = f"needs at least {params.min_rows} rows"
    else:
        rule = f"needs between {params.min_rows} and {params.max_rows} rows"
    return ExpectationDef(
        kind="ExpectTableRowCountToBeBetween",
        kwargs={"min_value": params.min_rows, "max_value": params.max_rows},
        rule=rule,
    )


def _id_checks(column: str) -> list[ExpectationDef]:
    return [
        ExpectationDef(kind="ExpectColumnValuesToNotBeNull", column=column, rule="ids must not be null"),
        ExpectationDef(kind="ExpectColumnValuesToBeUnique", column=column, rule="ids must be unique"),
    ]


def _target_checks(spec: DatasetSpec, profile: ReferenceProfile) -> list[ExpectationDef]:
    column = spec.target.column
    allowed = sorted({str(category_key(spec.target.positive)), *profile.target_values})
    return [
        ExpectationDef(kind="ExpectColumnValuesToNotBeNull", column=column, rule="target must not be null"),
        ExpectationDef(
            kind="ExpectColumnValuesToBeInSet",
            column=column,
            kwargs={"value_set": allowed},
            rule=f"target values must be one of {allowed}",
        ),
        # A one-class target cannot train a classifier: fail here, not deep inside training.
        ExpectationDef(
            kind="ExpectColumnUniqueValueCountToBeBetween",
            column=column,
            kwargs={"min_value": 2, "max_value": 2},
            rule="target must have exactly 2 distinct values",
        ),
    ]


def _null_check(column: str, params: ValidationParams) -> ExpectationDef:
    return ExpectationDef(
        kind="ExpectColumnValuesToNotBeNull",
        column=column,
        kwargs={"mostly": _mostly(params.max_null_fraction)},
        rule=f"at most {params.max_null_fraction:.0%} of values may be null",
    )


def _numeric_checks(column: str, profile: ReferenceProfile, params: ValidationParams) -> list[ExpectationDef]:
    checks = [
        ExpectationDef(
            kind="ExpectColumnValuesToBeInTypeList",
            column=column,
            kwargs={"type_list": list(NUMERIC_TYPES)},
            rule="values must have a numeric type",
        ),
        _null_check(column, params),
    ]
    reference = profile.numeric.get(column)
    if reference is None:
        raise ConfigError(f"reference profile has no range for numeric column '{column}': re-profile it")
    if reference.min is not None and reference.max is not None:
        margin = params.numeric_range_margin * (reference.max - reference.min)
        low, high = reference.min - margin, reference.max + margin
        checks.append(
            ExpectationDef(
                kind="ExpectColumnValuesToBeBetween",
                column=column,
                kwargs={"min_value": low, "max_value": high, "mostly": RANGE_MOSTLY},
                rule=f"values must lie within [{low:g}, {high:g}] (reference range plus margin)",
            )
        )
    return checks


def _categorical_checks(
    column: str, profile: ReferenceProfile, params: ValidationParams
) -> list[ExpectationDef]:
    categories = profile.categories.get(column)
    if categories is None:
        raise ConfigError(f"reference profile has no categories for column '{column}': re-profile it")
    return [
        _null_check(column, params),
        ExpectationDef(
            kind="ExpectColumnValuesToBeInSet",
            column=column,
            kwargs={
                "value_set": list(categories),
                "mostly": _mostly(params.max_unseen_category_fraction),
            },
            rule="values must be one of the reference categories",
        ),
    ]


def _mostly(max_fraction: float) -> float:
    # Rounded so 1 - 0.1 is 0.9, not 0.8999999999999999, in reports and comparisons.
    return round(1.0 - max_fraction, 10)


def builtin_reference(spec_name: str) -> ReferenceProfile | None:
    """The reference profile shipped next to a built-in spec, or None if there is none."""
    if not _SPEC_NAME.fullmatch(spec_name):
        return None
    resource = resources.files("churnops.specs").joinpath(f"{spec_name}{_REFERENCE_SUFFIX}")
    if not resource.is_file():
        return None
    return ReferenceProfile.model_validate_json(resource.read_text(encoding="utf-8"))

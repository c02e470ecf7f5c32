"""Reference profiles and expectation suites, built without Great Expectations."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from churnops.core.expectations import (
    NUMERIC_TYPES,
    ExpectationDef,
    ReferenceProfile,
    build_expectations,
    builtin_reference,
    category_key,
    profile_reference,
    to_category_keys,
    with_category_keys,
)
from churnops.core.params import ValidationParams
from churnops.core.spec import DatasetSpec, parse_spec
from churnops.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

KNOWN_KINDS = {
    "ExpectColumnToExist",
    "ExpectTableRowCountToBeBetween",
    "ExpectColumnValuesToNotBeNull",
    "ExpectColumnValuesToBeUnique",
    "ExpectColumnValuesToBeInSet",
    "ExpectColumnUniqueValueCountToBeBetween",
    "ExpectColumnValuesToBeInTypeList",
    "ExpectColumnValuesToBeBetween",
}
ROWS = ("ExpectTableRowCountToBeBetween", None)


@pytest.fixture
def spec() -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "tiny",
            "id_column": "id",
            "target": {"column": "churn", "positive": "Yes"},
            "features": {"numerical": ["tenure", "charges"], "categorical": ["plan", "senior"]},
            "pii": ["senior"],
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "tenure": [0, 10, 5, 2],
            "charges": [20.0, np.nan, 30.0, 25.0],
            "plan": ["basic", "pro", "basic", None],
            "senior": [0.0, 1.0, 0.0, 1.0],  # floats that are integers become "0"/"1"
            "churn": ["No", "No", "Yes", "No"],
        }
    )


def by_kind(expectations: list[ExpectationDef], kind: str, column: str | None) -> ExpectationDef:
    matches = [e for e in expectations if e.kind == kind and e.column == column]
    assert len(matches) == 1, f"{kind} on {column}: {len(matches)} matches"
    return matches[0]


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (1.0, "1"),
        (0, "0"),
        (np.float64(2.0), "2"),
        (np.int64(3), "3"),
        (1.5, "1.5"),
        ("Yes", "Yes"),
        (True, "1"),  # the transformer merges True with 1, as pandas does
    ],
)
def test_category_key(value: object, key: str) -> None:
    assert category_key(value) == key


def test_to_category_keys_keeps_nulls() -> None:
    keys = to_category_keys(pd.Series([1.0, np.nan, 0.0]))
    assert keys.iloc[0] == "1"
    assert pd.isna(keys.iloc[1])
    assert keys.iloc[2] == "0"


def test_with_category_keys_leaves_the_input_alone(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    keyed = with_category_keys(frame, spec)
    assert keyed["senior"].tolist() == ["0", "1", "0", "1"]
    assert frame["senior"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert keyed["tenure"].tolist() == frame["tenure"].tolist()


def test_profile_reference(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame, spec)
    assert profile.spec_name == "tiny"
    assert profile.row_count == 4
    assert (profile.numeric["tenure"].min, profile.numeric["tenure"].max) == (0.0, 10.0)
    assert (profile.numeric["charges"].min, profile.numeric["charges"].max) == (20.0, 30.0)
    assert profile.categories == {"plan": ("basic", "pro"), "senior": ("0", "1")}
    assert profile.target_values == ("No", "Yes")


def test_profile_round_trips_through_json(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame.assign(charges=np.nan), spec)
    assert profile.numeric["charges"].min is None  # an all-null column has no range
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile


def test_profile_is_frozen(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame, spec)
    with pytest.raises(ValueError, match="frozen"):
        profile.row_count = 1


def test_profile_rejects_missing_columns(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="plan"):
        profile_reference(frame.drop(columns="plan"), spec)


def test_profile_rejects_text_in_numeric_column(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'tenure' is not numeric"):
        profile_reference(frame.assign(tenure=["1", "2", "x", "4"]), spec)


def test_suite_checks_structure_first(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    expectations = build_expectations(spec, profile_reference(frame, spec), ValidationParams())
    existence = [e.column for e in expectations if e.kind == "ExpectColumnToExist"]
    assert existence == spec.columns
    assert [e.kind for e in expectations[: len(existence) + 1]][-1] == "ExpectTableRowCountToBeBetween"
    assert {e.kind for e in expectations} <= KNOWN_KINDS
    assert all(e.rule for e in expectations)


def test_row_count_bounds(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame, spec)
    unbounded = by_kind(build_expectations(spec, profile, ValidationParams(min_rows=50)), *ROWS)
    assert unbounded.kwargs == {"min_value": 50, "max_value": None}
    assert unbounded.rule == "needs at least 50 rows"
    bounded = by_kind(build_expectations(spec, profile, ValidationParams(min_rows=5, max_rows=9)), *ROWS)
    assert bounded.kwargs == {"min_value": 5, "max_value": 9}


def test_id_is_unique_and_not_null(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    expectations = build_expectations(spec, profile_reference(frame, spec), ValidationParams())
    assert by_kind(expectations, "ExpectColumnValuesToBeUnique", "id").kwargs == {}
    assert by_kind(expectations, "ExpectColumnValuesToNotBeNull", "id").kwargs == {}  # no `mostly`


def test_target_allows_positive_even_if_unseen(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame.assign(churn="No"), spec)
    expectations = build_expectations(spec, profile, ValidationParams())
    in_set = by_kind(expectations, "ExpectColumnValuesToBeInSet", "churn")
    assert in_set.kwargs == {"value_set": ["No", "Yes"]}
    two = by_kind(expectations, "ExpectColumnUniqueValueCountToBeBetween", "churn")
    assert two.kwargs == {"min_value": 2, "max_value": 2}
    assert "exactly 2" in two.rule


def test_feature_thresholds_follow_params(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    params = ValidationParams(max_null_fraction=0.05, max_unseen_category_fraction=0.1)
    expectations = build_expectations(spec, profile_reference(frame, spec), params)
    for column in ("tenure", "charges", "plan", "senior"):
        null_check = by_kind(expectations, "ExpectColumnValuesToNotBeNull", column)
        assert null_check.kwargs == {"mostly": 0.95}
    plan = by_kind(expectations, "ExpectColumnValuesToBeInSet", "plan")
    assert plan.kwargs == {"value_set": ["basic", "pro"], "mostly": 0.9}
    assert plan.rule == "values must be one of the reference categories"
    senior = by_kind(expectations, "ExpectColumnValuesToBeInSet", "senior")
    assert senior.kwargs["value_set"] == ["0", "1"]


def test_numeric_type_and_widened_range(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    params = ValidationParams(numeric_range_margin=0.5)
    expectations = build_expectations(spec, profile_reference(frame, spec), params)
    typed = by_kind(expectations, "ExpectColumnValuesToBeInTypeList", "tenure")
    assert {"int64", "float64", "Int64Dtype"} <= set(typed.kwargs["type_list"])
    assert "object" not in NUMERIC_TYPES
    assert "str" not in NUMERIC_TYPES
    between = by_kind(expectations, "ExpectColumnValuesToBeBetween", "tenure")
    assert between.kwargs == {"min_value": -5.0, "max_value": 15.0, "mostly": 0.99}


def test_all_null_reference_column_gets_no_range(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame.assign(charges=np.nan), spec)
    expectations = build_expectations(spec, profile, ValidationParams())
    assert not [
        e for e in expectations if e.kind == "ExpectColumnValuesToBeBetween" and e.column == "charges"
    ]


def test_profile_of_another_spec_is_rejected(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame, spec).model_copy(update={"spec_name": "other"})
    with pytest.raises(ConfigError, match="'other', not 'tiny'"):
        build_expectations(spec, profile, ValidationParams())


def test_profile_missing_a_column_is_rejected(spec: DatasetSpec, frame: pd.DataFrame) -> None:
    profile = profile_reference(frame, spec)
    stale = profile.model_copy(update={"categories": {"plan": ("basic",)}})
    with pytest.raises(ConfigError, match="'senior'"):
        build_expectations(spec, stale, ValidationParams())


def telco_spec() -> DatasetSpec:
    return parse_spec(resources.files("churnops.specs").joinpath("telco.yaml").read_text())


def test_builtin_telco_reference_matches_its_spec() -> None:
    spec, profile = telco_spec(), builtin_reference("telco")
    assert profile is not None
    assert profile.spec_name == "telco"
    assert profile.row_count == 7043
    assert set(profile.numeric) == set(spec.features.numerical)
    assert set(profile.categories) == set(spec.features.categorical)
    assert profile.categories["SeniorCitizen"] == ("0", "1")
    assert profile.categories["Contract"] == ("Month-to-month", "One year", "Two year")
    assert profile.target_values == ("No", "Yes")
    assert (profile.numeric["tenure"].min, profile.numeric["tenure"].max) == (0.0, 72.0)


def test_telco_suite_has_one_check_per_rule() -> None:
    spec = telco_spec()
    profile = builtin_reference("telco")
    assert profile is not None
    expectations = build_expectations(spec, profile, ValidationParams())
    # columns + rows + id(2) + target(3) + numeric(3 each) + categorical(2 each)
    expected = len(spec.columns) + 1 + 2 + 3 + 3 * 3 + 2 * 16
    assert len(expectations) == expected
    assert len({(e.kind, e.column) for e in expectations}) == expected


@pytest.mark.parametrize("name", ["no-such-spec", "../telco", "", "a/b"])
def test_builtin_reference_absent(name: str) -> None:
    assert builtin_reference(name) is None

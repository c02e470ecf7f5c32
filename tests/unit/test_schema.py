"""conform_to_spec, unparseable_numeric, target_labels and content_hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops.core.schema import conform_to_spec, content_hash, target_labels, unparseable_numeric
from churnops.core.spec import DatasetSpec
from churnops.errors import DataError

pytestmark = pytest.mark.unit


def make_spec(positive: Any = "Yes") -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "small",
            "id_column": "id",
            "target": {"column": "churn", "positive": positive},
            "features": {"numerical": ["charges", "tenure"], "categorical": ["plan"]},
        }
    )


def raw_frame() -> pd.DataFrame:
    # Columns deliberately out of the spec's order, plus two the spec does not name.
    return pd.DataFrame(
        {
            "churn": ["Yes", "No", "No"],
            "email": ["a@x.io", "b@x.io", "c@x.io"],
            "plan": ["basic", "  ", "pro"],
            "tenure": [1, 2, 3],
            "id": [101, 102, 103],
            "charges": ["10.5", " ", "30"],
            "notes": ["x", "y", "z"],
        }
    )


def test_columns_outside_the_spec_are_dropped_and_spec_order_kept() -> None:
    spec = make_spec()
    frame = conform_to_spec(raw_frame(), spec)
    assert list(frame.columns) == ["id", "charges", "tenure", "plan", "churn"]
    assert list(frame.columns) == spec.columns
    assert "email" not in frame.columns
    assert "notes" not in frame.columns


def test_whitespace_only_strings_become_missing_and_numeric_text_becomes_float() -> None:
    frame = conform_to_spec(raw_frame(), make_spec())
    assert frame["charges"].dtype == np.float64
    assert frame["charges"].iloc[0] == pytest.approx(10.5)
    assert np.isnan(frame["charges"].iloc[1])
    assert frame["charges"].iloc[2] == pytest.approx(30.0)
    assert pd.isna(frame["plan"].iloc[1])
    assert frame["plan"].iloc[0] == "basic"
    assert frame["tenure"].dtype == np.float64


def test_conform_does_not_modify_the_input() -> None:
    raw = raw_frame()
    conform_to_spec(raw, make_spec())
    assert raw.loc[1, "charges"] == " "
    assert "email" in raw.columns


def test_telco_total_charges_blank_becomes_float(telco_spec: DatasetSpec) -> None:
    rows = []
    for i, total in enumerate(["29.85", " ", "1889.5"]):
        row: dict[str, Any] = dict.fromkeys(telco_spec.features.categorical, "No")
        row |= {"customerID": f"c{i}", "tenure": i, "MonthlyCharges": 20.0 + i, "TotalCharges": total}
        row |= {"Churn": "No", "extra": 1}
        rows.append(row)
    frame = conform_to_spec(pd.DataFrame(rows), telco_spec)
    assert frame["TotalCharges"].dtype == np.float64
    assert frame["TotalCharges"].isna().tolist() == [False, True, False]
    assert frame["TotalCharges"].iloc[2] == pytest.approx(1889.5)
    assert unparseable_numeric(frame, telco_spec) == {}
    assert "extra" not in frame.columns


def test_telco_file_conforms_with_float_total_charges(telco_spec: DatasetSpec, telco_csv: Path) -> None:
    raw = pd.read_csv(telco_csv, low_memory=False)
    # The " " blanks keep the column text in the raw file.
    assert not pd.api.types.is_numeric_dtype(raw["TotalCharges"])
    frame = conform_to_spec(raw, telco_spec)
    assert frame["TotalCharges"].dtype == np.float64
    blanks = raw["TotalCharges"].astype(str).str.strip().eq("")
    assert blanks.sum() > 0
    assert frame.loc[blanks, "TotalCharges"].isna().all()


def test_numeric_column_with_text_keeps_raw_values_and_is_reported() -> None:
    raw = raw_frame()
    raw["charges"] = ["10.5", "n/a-ish", "30"]
    spec = make_spec()
    frame = conform_to_spec(raw, spec)
    assert frame["charges"].tolist() == ["10.5", "n/a-ish", "30"]
    assert unparseable_numeric(frame, spec) == {"charges": "n/a-ish"}


def test_missing_column_names_the_column_and_the_spec() -> None:
    raw = raw_frame().drop(columns=["tenure"])
    with pytest.raises(DataError, match=r"'tenure'.*'small'"):
        conform_to_spec(raw, make_spec())


@pytest.mark.parametrize(
    "raw", [pd.DataFrame(), pd.DataFrame(columns=["id", "charges", "tenure", "plan", "churn"])]
)
def test_empty_frame_is_a_data_error(raw: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="empty"):
        conform_to_spec(raw, make_spec())


def test_target_labels_with_string_positive() -> None:
    frame = pd.DataFrame({"churn": ["Yes", "No", " Yes ", "no", None, "Yes"]})
    labels = target_labels(frame, make_spec("Yes"))
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 0, 1, 0, 0, 1]


@pytest.mark.parametrize(
    "values",
    [[1, 0, 0, 1], [1.0, 0.0, 0.0, 1.0], ["1", "0", "0", "1"], [True, False, False, True]],
    ids=["ints", "floats", "strings", "bools"],
)
def test_target_labels_with_numeric_positive(values: list[Any]) -> None:
    labels = target_labels(pd.DataFrame({"churn": values}), make_spec(1))
    assert labels.tolist() == [1, 0, 0, 1]


def test_content_hash_is_stable_and_sensitive_to_one_value() -> None:
    spec = make_spec()
    frame = conform_to_spec(raw_frame(), spec)
    first = content_hash(frame)
    assert first == content_hash(frame)
    assert first == content_hash(conform_to_spec(raw_frame(), spec))
    changed = frame.copy()
    changed.loc[2, "tenure"] = 4.0
    assert content_hash(changed) != first
    renamed = frame.rename(columns={"plan": "tier"})
    assert content_hash(renamed) != first


def test_id_column_becomes_text() -> None:
    frame = conform_to_spec(raw_frame(), make_spec())
    assert frame["id"].tolist() == ["101", "102", "103"]
    assert all(isinstance(v, str) for v in frame["id"])

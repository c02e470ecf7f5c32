"""Validate the telco data with Great Expectations: clean data passes, each kind of breakage fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops.core.expectations import ExpectationDef, build_expectations, builtin_reference
from churnops.core.params import ValidationParams
from churnops.core.spec import DatasetSpec, parse_spec
from churnops.errors import ConfigError, ValidationFailed
from churnops.io.validation import MAX_EXAMPLES, REDACTED, ValidationReport, validate_frame

pytestmark = pytest.mark.integration

TELCO_CSV = Path("/work/shared/data/telco_churn.csv")
PII_MARKER = "PII-SENTINEL-VALUE"


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return parse_spec(resources.files("churnops.specs").joinpath("telco.yaml").read_text())


@pytest.fixture(scope="module")
def expectations(spec: DatasetSpec) -> list[ExpectationDef]:
    profile = builtin_reference("telco")
    assert profile is not None
    return build_expectations(spec, profile, ValidationParams())


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    if not TELCO_CSV.is_file():
        pytest.skip(f"{TELCO_CSV} not available")
    frame = pd.read_csv(TELCO_CSV)
    # As ingestion leaves it: the " " blanks of TotalCharges are missing, the column is float.
    blank = frame["TotalCharges"].str.strip() == ""
    frame["TotalCharges"] = pd.to_numeric(frame["TotalCharges"].where(~blank))
    return frame


@pytest.fixture(scope="module")
def clean_report(
    telco: pd.DataFrame,
    spec: DatasetSpec,
    expectations: list[ExpectationDef],
    tmp_path_factory: pytest.TempPathFactory,
) -> ValidationReport:
    # The first run pays the slow Great Expectations import once for the whole module.
    return validate_frame(telco, spec, expectations, tmp_path_factory.mktemp("clean"))


Check = Callable[..., ValidationReport]


@pytest.fixture
def check(
    spec: DatasetSpec,
    expectations: list[ExpectationDef],
    tmp_path: Path,
    clean_report: ValidationReport,
) -> Check:
    """Validate a variant of the data into a fresh report directory."""

    def run(frame: pd.DataFrame, pii_columns: list[str] | None = None) -> ValidationReport:
        return validate_frame(frame, spec, expectations, tmp_path / "report", pii_columns=pii_columns)

    return run


def read_json(report: ValidationReport) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(report.json_path.read_text())
    return summary


def test_clean_telco_passes(clean_report: ValidationReport) -> None:
    assert clean_report.success, clean_report.first_failure()
    assert clean_report.first_failure() == ""
    clean_report.raise_if_failed()
    summary = read_json(clean_report)
    assert summary["success"] is True
    assert summary["rows"] == 7043
    assert summary["failed"] == 0
    assert "PASSED" in clean_report.html_path.read_text()


def test_recoded_contract_fails_naming_the_column(check: Check, telco: pd.DataFrame) -> None:
    report = check(telco.assign(Contract=telco["Contract"].replace("Month-to-month", "M2M")))
    assert not report.success
    message = report.first_failure()
    assert message.startswith("column 'Contract': values must be one of the reference categories")
    assert "'M2M'" in message
    assert "% unexpected" in message
    with pytest.raises(ValidationFailed, match="Contract") as raised:
        report.raise_if_failed()
    assert raised.value.report == report.html_path


def test_one_class_target_fails(check: Check, telco: pd.DataFrame) -> None:
    report = check(telco.assign(Churn="No"))
    assert report.first_failure() == "column 'Churn': target must have exactly 2 distinct values, got 1"


def test_duplicate_ids_fail(check: Check, telco: pd.DataFrame) -> None:
    ids = telco["customerID"].copy()
    ids.iloc[1:4] = ids.iloc[0]
    report = check(telco.assign(customerID=ids))
    message = report.first_failure()
    assert message.startswith("column 'customerID': ids must be unique")
    assert repr(ids.iloc[0]) in message


def test_text_in_numeric_column_fails_on_type(check: Check, telco: pd.DataFrame) -> None:
    mixed = telco["TotalCharges"].astype(object)
    mixed.iloc[3] = "n/a"
    report = check(telco.assign(TotalCharges=mixed))
    assert report.first_failure().startswith("column 'TotalCharges': values must have a numeric type")
    assert "'n/a'" in report.first_failure()


def test_string_dtype_numeric_column_fails_on_type(check: Check, telco: pd.DataFrame) -> None:
    report = check(telco.assign(tenure=telco["tenure"].astype(str)))
    assert report.first_failure() == "column 'tenure': values must have a numeric type, got str"


def test_too_few_rows_fail(check: Check, telco: pd.DataFrame) -> None:
    report = check(telco.head(12))
    assert report.first_failure() == "table: needs at least 50 rows, got 12"


def test_null_fraction_over_threshold_fails(check: Check, telco: pd.DataFrame) -> None:
    charges = telco["MonthlyCharges"].copy()
    charges.iloc[: len(charges) // 10] = np.nan  # 10% null, threshold 5%
    report = check(telco.assign(MonthlyCharges=charges))
    assert report.first_failure() == (
        "column 'MonthlyCharges': at most 5% of values may be null (10.0% null)"
    )


def test_missing_column_fails_first(check: Check, telco: pd.DataFrame) -> None:
    report = check(telco.drop(columns="PaymentMethod"))
    assert report.first_failure() == "column 'PaymentMethod': column must be present"


def test_reports_written_and_pii_redacted(check: Check, telco: pd.DataFrame) -> None:
    broken = telco.assign(
        gender=telco["gender"].replace("Male", PII_MARKER),
        Contract=telco["Contract"].replace("Month-to-month", "M2M"),
    )
    report = check(broken)
    summary, page = read_json(report), report.html_path.read_text()
    assert summary["success"] is False
    assert summary["first_failure"] == report.first_failure()
    assert PII_MARKER not in report.json_path.read_text()
    assert PII_MARKER not in page
    gender = next(r for r in summary["results"] if r["column"] == "gender" and not r["success"])
    assert gender["redacted"] is True
    assert gender["partial_unexpected_list"] == [REDACTED] * MAX_EXAMPLES
    assert gender["observed"]["unexpected_percent"] > 40
    assert all(len(r["partial_unexpected_list"]) <= MAX_EXAMPLES for r in summary["results"])
    assert "M2M" in page
    assert len(summary["results"]) == page.count("<tr class=")


def test_pii_columns_can_be_overridden(check: Check, telco: pd.DataFrame) -> None:
    report = check(
        telco.assign(Contract=telco["Contract"].replace("Month-to-month", "M2M")), pii_columns=["Contract"]
    )
    assert "M2M" not in report.json_path.read_text()
    assert "examples withheld" in report.first_failure()


def test_importing_the_adapter_does_not_import_great_expectations() -> None:
    code = "import sys, churnops.io.validation; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_expectation_kind_is_a_config_error(
    spec: DatasetSpec, telco: pd.DataFrame, tmp_path: Path
) -> None:
    bogus = [ExpectationDef(kind="ExpectNoSuchThing", column="tenure", rule="never")]
    with pytest.raises(ConfigError, match="ExpectNoSuchThing"):
        validate_frame(telco, spec, bogus, tmp_path)

"""Dataset specs and params: parsing, built-ins, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnops.core.params import Params, parse_params
from churnops.core.spec import parse_spec
from churnops.errors import ConfigError
from churnops.io.datasets import load_params, load_spec

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

DESIGN_SPEC = """
name: telco
id_column: customerID
target: {column: Churn, positive: "Yes"}
timestamp_column: null
features:
  numerical: [tenure, MonthlyCharges, TotalCharges]
  categorical: [Contract, PaymentMethod, InternetService, gender, SeniorCitizen]
pii: [gender]
slices: [Contract, InternetService]
"""


def test_design_md_spec_parses_exactly() -> None:
    spec = parse_spec(DESIGN_SPEC)
    assert spec.id_column == "customerID"
    assert spec.columns[0] == "customerID"
    assert spec.columns[-1] == "Churn"
    assert spec.feature_columns == [
        "tenure",
        "MonthlyCharges",
        "TotalCharges",
        "Contract",
        "PaymentMethod",
        "InternetService",
        "gender",
        "SeniorCitizen",
    ]


@pytest.mark.parametrize("name", ["synthetic", "telco"])
def test_builtin_specs_load(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    assert spec.feature_set_version().startswith(f"{name}-")


def test_numeric_positive_value() -> None:
    spec = parse_spec(DESIGN_SPEC.replace('positive: "Yes"', "positive: 1"))
    assert spec.is_positive(1)
    assert spec.is_positive(1.0)
    assert spec.is_positive("1")
    assert not spec.is_positive(0)
    assert not spec.is_positive("Yes")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("pii: [gender]", "pii: [email]"), "pii"),
        (("slices: [Contract, InternetService]", "slices: [Region]"), "slices"),
        (("id_column: customerID", "id_column: tenure"), "id_column"),
        (("name: telco", "name: 'bad name!'"), "name"),
        (('target: {column: Churn, positive: "Yes"}', "target: {column: Churn}"), "target.positive"),
    ],
)
def test_bad_spec_names_the_field(change: tuple[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field.split(".", maxsplit=1)[0]):
        parse_spec(DESIGN_SPEC.replace(*change), source="my.yaml")


def test_spec_unknown_key_rejected() -> None:
    with pytest.raises(ConfigError, match="colour"):
        parse_spec(DESIGN_SPEC + "colour: blue\n")


def test_unknown_spec_name_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="neither a built-in spec"):
        load_spec("nope")


def test_repo_params_yaml_equals_defaults() -> None:
    """Running outside a checkout must behave like running inside one, except for the price table:
    no price is a fact about anybody's bill, so the code has none and params.yaml gives an example."""
    for parsed in (parse_params((REPO / "params.yaml").read_text()), load_params(REPO / "params.yaml")):
        assert parsed.monitoring.cost.prices is not None
        cost = parsed.monitoring.cost.model_copy(update={"prices": None})
        monitoring = parsed.monitoring.model_copy(update={"cost": cost})
        assert parsed.model_copy(update={"monitoring": monitoring}) == Params()


def test_bad_params_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"split\.holdout_fraction"):
        parse_params("split: {holdout_fraction: 2}")
    with pytest.raises(ConfigError, match="candidates"):
        parse_params(
            "training: {candidates: [{name: a, kind: logistic_regression}, {name: a, kind: lightgbm}]}"
        )
    with pytest.raises(ConfigError, match="kind"):
        parse_params("training: {candidates: [{name: a, kind: catboost}]}")

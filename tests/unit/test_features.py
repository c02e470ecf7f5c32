"""FeatureTransformer: fitted values, engineered features and the training/serving skew guarantee."""

from __future__ import annotations

import math
import pickle
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnops.core.features import FeatureTransformer, category_key, to_float
from churnops.core.params import FeatureParams, parse_params
from churnops.core.spec import DatasetSpec, parse_spec
from churnops.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def make_spec(numerical: tuple[str, ...] = (), categorical: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "t",
            "id_column": "id",
            "target": {"column": "y", "positive": 1},
            "features": {"numerical": numerical, "categorical": categorical},
        }
    )


def fitted(
    train: dict[str, list[Any]],
    numerical: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    **params: Any,
) -> FeatureTransformer:
    spec = make_spec(numerical, categorical)
    return FeatureTransformer(spec, FeatureParams(**params)).fit(pd.DataFrame(train))


def column(ft: FeatureTransformer, frame: pd.DataFrame, name: str) -> list[float]:
    return ft.transform(frame)[:, ft.output_names.index(name)].tolist()


def assert_same_rows(ft: FeatureTransformer, records: list[dict[str, Any]], frame: pd.DataFrame) -> None:
    batch = ft.transform(frame)
    assert batch.dtype == np.float64
    assert batch.shape == (len(records), ft.n_outputs)
    assert not np.isnan(batch).any()
    for i, record in enumerate(records):
        row = ft.transform_one(record)
        assert np.array_equal(row, batch[i]), (record, ft.output_names, row, batch[i])


# --- the skew guarantee, as a property -------------------------------------------------------

NUMERICAL = ("n1", "n2", "n3")
CATEGORICAL = ("c1", "c2", "c3")
COLUMNS = [*NUMERICAL, *CATEGORICAL]
PROPERTY_SPEC = make_spec(NUMERICAL, CATEGORICAL)

missing_values = st.sampled_from([None, math.nan])
numeric_values = {
    "float": st.one_of(st.floats(-1e6, 1e6, allow_nan=False), missing_values),
    "int": st.integers(-1000, 1000),
    "mixed": st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**6), 10**6),
        st.booleans(),
        missing_values,
        st.sampled_from(["1.5", " 2 ", "1_000", "abc", "", "inf", "nan", "-0"]),
    ),
}
categorical_values = {
    "str": st.one_of(st.sampled_from(["a", "b", "c", "Yes", "1"]), missing_values),
    "int": st.sampled_from([0, 1, 2]),
    "mixed": st.one_of(
        st.sampled_from(["a", "b", "c", "Yes", "1", "0", "nan", "1.0"]),
        st.sampled_from([0, 1, 1.0, 0.0, -0.0, 2.5, True, False]),
        missing_values,
        st.text(max_size=2),
    ),
}


@st.composite
def column_kinds(draw: st.DrawFn) -> dict[str, st.SearchStrategy[Any]]:
    kinds = {c: numeric_values[draw(st.sampled_from(sorted(numeric_values)))] for c in NUMERICAL}
    kinds.update(
        {c: categorical_values[draw(st.sampled_from(sorted(categorical_values)))] for c in CATEGORICAL}
    )
    return kinds


def records_of(
    kinds: dict[str, st.SearchStrategy[Any]], drop_keys: bool
) -> st.SearchStrategy[dict[str, Any]]:
    if drop_keys:  # serving requests may omit fields
        return st.fixed_dictionaries({}, optional=kinds)
    return st.fixed_dictionaries(kinds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_transform_one_matches_transform_row_for_row(data: st.DataObject) -> None:
    max_categories = data.draw(st.integers(2, 4), label="max_categories")
    train_kinds, test_kinds = (
        data.draw(column_kinds(), label="train"),
        data.draw(column_kinds(), label="test"),
    )
    train = data.draw(st.lists(records_of(train_kinds, drop_keys=False), min_size=1, max_size=25))
    test = data.draw(st.lists(records_of(test_kinds, drop_keys=True), min_size=1, max_size=10))
    as_object = data.draw(st.booleans(), label="object dtype frames")
    params = FeatureParams(
        buckets={"n1": (-1.0, 0.0, 10.0, 1000.0)},
        ratios={"r": ("n1", "n2"), "r_self": ("n3", "n3")},
        counts={"k": {"columns": ("c1", "c2", "c3"), "value": "a"}},
        crosses=(("c1", "c2"),),
        max_categories=max_categories,
    )

    def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
        result = pd.DataFrame(records, columns=COLUMNS)
        return result.astype(object) if as_object else result

    ft = FeatureTransformer(PROPERTY_SPEC, params).fit(frame(train))

    assert len(ft.active_engineered) == 5
    assert_same_rows(ft, train, frame(train))
    assert_same_rows(ft, test, frame(test))
    for record in test:  # a one-row frame infers its own dtypes
        assert_same_rows(ft, [record], frame([record]))


def test_scalar_functions_agree_on_equal_numbers() -> None:
    assert {category_key(v) for v in (1, 1.0, "1", True, np.int64(1), np.float32(1.0), np.True_)} == {"1"}
    assert category_key(-0.0) == "0"
    assert category_key(2.5) == "2.5"
    assert [category_key(v) for v in (None, math.nan, np.float64("nan"), pd.NA, pd.NaT)] == [None] * 5
    assert [to_float(v) for v in (3, "3.5", True, np.int32(2))] == [3.0, 3.5, 1.0, 2.0]
    assert all(math.isnan(to_float(v)) for v in (None, "abc", " ", math.inf, "-inf", pd.NA, object()))


# --- fitted values -----------------------------------------------------------------------------


def test_imputes_the_training_median_and_flags_missing() -> None:
    ft = fitted({"x": [1.0, 2.0, None, 10.0], "z": [1.0, 2.0, 3.0, 4.0]}, numerical=("x", "z"))
    assert ft.output_names == ["x", "x__missing", "z"]
    frame = pd.DataFrame({"x": [None, 5.0], "z": [None, 7.0]})
    assert ft.transform(frame).tolist() == [[2.0, 1.0, 2.5], [5.0, 0.0, 7.0]]
    assert ft.transform_one({}).tolist() == [2.0, 1.0, 2.5]


def test_all_missing_column_imputes_zero_and_strings_are_coerced() -> None:
    ft = fitted({"x": [None, None], "t": [" ", "29.85"]}, numerical=("x", "t"))
    assert ft.output_names == ["x", "x__missing", "t", "t__missing"]
    assert ft.transform_one({"x": "oops", "t": "12.5"}).tolist() == [0.0, 1.0, 12.5, 0.0]
    assert ft.transform_one({"t": " "}).tolist() == [0.0, 1.0, 29.85, 1.0]


def test_unknown_category_encodes_as_zeros_and_missing_gets_its_own_column() -> None:
    ft = fitted({"c": ["a", "b", "a"], "m": ["x", None, "x"]}, categorical=("c", "m"))
    assert ft.output_names == ["c=a", "c=b", "m=x", "m=__missing__"]
    assert ft.transform_one({"c": "zzz", "m": None}).tolist() == [0, 0, 0, 1]
    assert ft.transform_one({"c": None, "m": "new"}).tolist() == [0, 0, 0, 0]  # c had no missing values
    assert ft.transform_one({"c": "b"}).tolist() == [0, 1, 0, 1]


def test_numbers_and_numeric_strings_share_a_category() -> None:
    ft = fitted({"s": [0, 1, 1, 0]}, categorical=("s",))
    assert ft.output_names == ["s=0", "s=1"]
    rows = [ft.transform_one({"s": v}).tolist() for v in (1, 1.0, "1", True, "0", 0.0)]
    assert rows == [[0, 1]] * 4 + [[1, 0]] * 2


def test_top_k_keeps_the_most_frequent_categories_ties_by_name() -> None:
    ft = fitted({"c": ["d", "c", "b", "c", "b", "a", "a", "a"]}, categorical=("c",), max_categories=2)
    assert ft.output_names == ["c=a", "c=b"]  # b and c tie on 2: b wins by name
    assert ft.transform(pd.DataFrame({"c": ["c", "d", "a"]})).tolist() == [[0, 0], [0, 0], [1, 0]]


# --- engineered features -----------------------------------------------------------------------


def test_buckets_use_right_closed_search_on_the_imputed_value() -> None:
    ft = fitted({"t": [0.0, 30.0, None]}, numerical=("t",), buckets={"t": (6, 12, 24, 48)})
    assert ft.active_engineered == ["t__bucket"]
    frame = pd.DataFrame({"t": [0.0, 6.0, 11.9, 12.0, 100.0, None]})
    assert column(ft, frame, "t__bucket") == [0, 1, 1, 2, 4, 2]  # None imputes the median 15: in [12, 24)
    assert ft.transform_one({"t": 48})[ft.output_names.index("t__bucket")] == 4


def test_ratios_divide_imputed_values_and_zero_denominators_give_zero() -> None:
    train = {"num": [10.0, 20.0, None], "den": [4.0, 0.0, 8.0]}
    ft = fitted(train, numerical=("num", "den"), ratios={"r": ("num", "den")})
    frame = pd.DataFrame({"num": [10.0, 5.0, None], "den": [4.0, 0.0, 3.0]})
    assert column(ft, frame, "r") == [2.5, 0.0, 5.0]  # missing num imputes the median 15
    assert ft.output_sources[ft.output_names.index("r")] == ("num", "den")


def test_counts_count_categorical_columns_equal_to_the_value() -> None:
    train = {"p": ["Yes", "No"], "q": ["Yes", "Yes"], "r": ["No", None]}
    counts = {"n_yes": {"columns": ("p", "q", "r"), "value": "Yes"}}
    ft = fitted(train, categorical=("p", "q", "r"), counts=counts)
    frame = pd.DataFrame({"p": ["Yes", "No", None], "q": ["Yes", "Maybe", "Yes"], "r": ["Yes", "No", None]})
    assert column(ft, frame, "n_yes") == [3.0, 0.0, 1.0]
    assert ft.output_sources[ft.output_names.index("n_yes")] == ("p", "q", "r")


def test_crosses_one_hot_pairs_with_the_same_unknown_and_missing_rules() -> None:
    train = {"a": ["x", "x", "y", None], "b": ["1", "2", "1", "1"]}
    ft = fitted(train, categorical=("a", "b"), crosses=(("a", "b"),))
    cross = [n for n in ft.output_names if n.startswith("a|b=")]
    assert cross == ["a|b=x|1", "a|b=x|2", "a|b=y|1", "a|b=__missing__"]
    assert {ft.output_sources[ft.output_names.index(n)] for n in cross} == {("a", "b")}
    frame = pd.DataFrame({"a": ["y", "y", None, "x"], "b": [1, "2", "2", None]})
    block = ft.transform(frame)[:, [ft.output_names.index(n) for n in cross]]
    assert block.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


def test_engineered_features_are_skipped_when_their_columns_are_absent_or_of_the_wrong_kind() -> None:
    params = FeatureParams(
        buckets={"t": (1.0,), "gone": (1.0,), "c": (1.0,)},
        ratios={"ok": ("t", "u"), "bad": ("t", "gone"), "kind": ("t", "c")},
        counts={"k": {"columns": ("c", "gone"), "value": "x"}},
        crosses=(("c", "d"), ("c", "t")),
    )
    spec = make_spec(numerical=("t", "u"), categorical=("c", "d"))
    ft = FeatureTransformer(spec, params)
    assert ft.active_engineered == ["t__bucket", "ok", "c|d"]
    frame = pd.DataFrame({"t": [1.0], "u": [2.0], "c": ["x"], "d": ["y"]})
    assert ft.fit(frame).output_names[-3:] == ["t__bucket", "ok", "c|d=x|y"]


def test_unsorted_bucket_edges_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"features\.buckets\.t"):
        FeatureTransformer(make_spec(numerical=("t",)), FeatureParams(buckets={"t": (12.0, 6.0)}))


# --- contract ---------------------------------------------------------------------------------


def test_missing_feature_column_is_a_data_error_naming_it() -> None:
    ft = FeatureTransformer(make_spec(numerical=("x",), categorical=("c",)), FeatureParams())
    with pytest.raises(DataError, match="'c'"):
        ft.fit(pd.DataFrame({"x": [1.0], "other": ["a"]}))
    ft.fit(pd.DataFrame({"x": [1.0], "c": ["a"], "extra": [0]}))
    with pytest.raises(DataError, match="'x'"):
        ft.transform(pd.DataFrame({"c": ["a"]}))


def test_transform_before_fit_is_an_error() -> None:
    ft = FeatureTransformer(make_spec(numerical=("x",)), FeatureParams())
    with pytest.raises(RuntimeError, match="not fitted"):
        ft.transform_one({"x": 1})


def test_transform_one_writes_into_a_preallocated_row() -> None:
    ft = fitted({"x": [1.0, None], "c": ["a", "b"]}, numerical=("x",), categorical=("c",))
    out = np.full(ft.n_outputs, 7.0)
    assert ft.transform_one({"x": 3, "c": "b"}, out=out) is out
    assert out.tolist() == [3.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="shape"):
        ft.transform_one({}, out=np.zeros(ft.n_outputs + 1))


def test_pickle_round_trip_transforms_identically() -> None:
    ft = fitted(
        {"x": [1.0, None, 3.0], "a": ["p", "q", None], "b": ["r", "r", "s"]},
        numerical=("x",),
        categorical=("a", "b"),
        buckets={"x": (2.0,)},
        crosses=(("a", "b"),),
    )
    clone = pickle.loads(pickle.dumps(ft))
    frame = pd.DataFrame({"x": [None, 2.0], "a": ["q", "new"], "b": ["s", None]})
    assert np.array_equal(clone.transform(frame), ft.transform(frame))
    assert clone.transform_one({"a": "p"}).tolist() == ft.transform_one({"a": "p"}).tolist()
    assert (clone.output_names, clone.output_sources) == (ft.output_names, ft.output_sources)


# --- the built-in specs with params.yaml ------------------------------------------------------

PARAMS = parse_params((ROOT / "params.yaml").read_text()).features
SPECS = files("churnops.specs")

TELCO_ROWS: list[dict[str, Any]] = [
    {"tenure": 1, "MonthlyCharges": 29.85, "TotalCharges": "29.85", "Contract": "Month-to-month",
     "PaymentMethod": "Electronic check", "InternetService": "DSL", "gender": "Female", "SeniorCitizen": 0,
     "Partner": "Yes", "Dependents": "No", "PhoneService": "No", "MultipleLines": "No phone service",
     "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "No", "TechSupport": "No",
     "StreamingTV": "No", "StreamingMovies": "No", "PaperlessBilling": "Yes"},
    {"tenure": 34, "MonthlyCharges": 56.95, "TotalCharges": "1889.5", "Contract": "One year",
     "PaymentMethod": "Mailed check", "InternetService": "DSL", "gender": "Male", "SeniorCitizen": 0,
     "Partner": "No", "Dependents": "No", "PhoneService": "Yes", "MultipleLines": "No",
     "OnlineSecurity": "Yes", "OnlineBackup": "No", "DeviceProtection": "Yes", "TechSupport": "No",
     "StreamingTV": "No", "StreamingMovies": "No", "PaperlessBilling": "No"},
    {"tenure": 0, "MonthlyCharges": 99.65, "TotalCharges": " ", "Contract": "Two year",
     "PaymentMethod": "Credit card (automatic)", "InternetService": "Fiber optic", "gender": "Female",
     "SeniorCitizen": 1, "Partner": "Yes", "Dependents": "Yes", "PhoneService": "Yes", "MultipleLines": "Yes",
     "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "Yes", "TechSupport": "Yes",
     "StreamingTV": "Yes", "StreamingMovies": "Yes", "PaperlessBilling": "Yes"},
]  # fmt: skip

SYNTHETIC_ROWS: list[dict[str, Any]] = [
    {"age": 34, "tenure_months": 12, "monthly_charges": 70.5, "total_charges": 846.0, "support_calls": 2,
     "num_services": 3, "gender": "F", "region": "north", "contract": "month-to-month",
     "payment_method": "card", "internet_service": "fiber", "tech_support": "no", "online_security": "no",
     "streaming": "yes", "paperless_billing": "yes", "partner": "no"},
    {"age": 61, "tenure_months": 48, "monthly_charges": 40.0, "total_charges": None, "support_calls": 0,
     "num_services": 0, "gender": "M", "region": "south", "contract": "two-year",
     "payment_method": "bank", "internet_service": "dsl", "tech_support": "yes", "online_security": None,
     "streaming": "no", "paperless_billing": "no", "partner": "yes"},
    {"age": 25, "tenure_months": 3, "monthly_charges": 95.25, "total_charges": 285.75, "support_calls": 5,
     "num_services": 5, "gender": "F", "region": "west", "contract": "month-to-month",
     "payment_method": "check", "internet_service": "fiber", "tech_support": "no", "online_security": "yes",
     "streaming": "yes", "paperless_billing": "yes", "partner": "no"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec_file", "rows", "engineered"),
    [
        ("telco.yaml", TELCO_ROWS, ["tenure__bucket", "charges_per_month_of_tenure", "n_services",
                                    "Contract|InternetService"]),
        ("synthetic.yaml", SYNTHETIC_ROWS, ["tenure_months__bucket", "total_charges_per_month",
                                            "charges_per_service", "contract|internet_service"]),
    ],
)  # fmt: skip
def test_builtin_specs_with_params_yaml(
    spec_file: str, rows: list[dict[str, Any]], engineered: list[str]
) -> None:
    spec = parse_spec(SPECS.joinpath(spec_file).read_text(), source=spec_file)
    frame = pd.DataFrame(rows, columns=spec.feature_columns)
    # Three rows: every PII category is rarer than the default floor, so lower it here.
    ft = FeatureTransformer(spec, PARAMS.model_copy(update={"min_pii_category_count": 1})).fit(frame)
    assert ft.active_engineered == engineered
    assert len(set(ft.output_names)) == ft.n_outputs == len(ft.output_sources)
    assert {s for sources in ft.output_sources for s in sources} == set(spec.feature_columns)
    assert_same_rows(ft, rows, frame)
    unseen = {**rows[0], spec.features.categorical[0]: "never seen", spec.features.numerical[0]: None}
    assert_same_rows(ft, [unseen], pd.DataFrame([unseen], columns=spec.feature_columns))


def test_telco_engineered_values() -> None:
    spec = parse_spec(SPECS.joinpath("telco.yaml").read_text())
    frame = pd.DataFrame(TELCO_ROWS, columns=spec.feature_columns)
    ft = FeatureTransformer(spec, PARAMS).fit(frame)
    assert column(ft, frame, "n_services") == [1.0, 3.0, 6.0]
    assert column(ft, frame, "tenure__bucket") == [0.0, 3.0, 0.0]
    # blank TotalCharges imputes the median (959.675); tenure 0 gives a zero ratio
    assert column(ft, frame, "TotalCharges__missing") == [0.0, 0.0, 1.0]
    assert column(ft, frame, "charges_per_month_of_tenure") == [29.85, 1889.5 / 34, 0.0]


def test_rare_pii_categories_get_no_encoding_of_their_own() -> None:
    """A PII value shared by fewer than `min_pii_category_count` training rows could single a customer
    out: it is encoded like an unseen value, so the pickled model never holds it."""
    spec = parse_spec(SPECS.joinpath("synthetic.yaml").read_text(), source="synthetic.yaml")
    frame = pd.DataFrame(SYNTHETIC_ROWS * 20, columns=spec.feature_columns)
    frame.loc[0, "gender"] = "unique-to-one-customer"
    ft = FeatureTransformer(spec, PARAMS).fit(frame)
    assert not any("unique-to-one-customer" in name for name in ft.output_names)
    common = frame["gender"].iloc[1]
    assert f"gender={common}" in ft.output_names
    row = frame.iloc[0].to_dict()
    assert ft.transform_one(row).tolist() == ft.transform_one({**row, "gender": "never-seen"}).tolist()

"""The hot-path accumulator counts exactly what a plain implementation counts, and cheaply."""

from __future__ import annotations

import math
import timeit
from bisect import bisect_right
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnops.core.drift_accumulator import DriftAccumulator, decode_counts, encode_counts, merge
from churnops.core.drift_profile import CategoricalShares, ReferenceProfile, build_profile, frame_counts
from churnops.core.spec import DatasetSpec
from churnops.core.synthetic import generate_customers
from churnops.errors import ConfigError, DataError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def profile(synthetic_spec: DatasetSpec) -> ReferenceProfile:
    training = generate_customers(5_000, seed=31)
    return build_profile(training, synthetic_spec, training["true_churn_probability"], max_categories=4)


def plain_counts(
    profile: ReferenceProfile, records: list[Mapping[str, object]], probabilities: list[float]
) -> np.ndarray:
    """The obvious implementation, written from the profile's documented rules."""
    out = np.zeros(profile.layout().size, dtype=np.int64)
    layout = profile.layout()
    for record, probability in zip(records, probabilities, strict=True):
        out[0] += 1
        for feature in profile.features:
            start = layout.features[feature.name].start
            raw = record.get(feature.name)
            if isinstance(feature, CategoricalShares):
                out[start + _category_bin(feature, raw)] += 1
            else:
                number = _as_number(raw)
                out[
                    start
                    + (len(feature.edges) + 1 if math.isnan(number) else bisect_right(feature.edges, number))
                ] += 1
        out[layout.prediction.start + bisect_right(profile.prediction.edges, probability)] += 1
    return out


def _as_number(raw: object) -> float:
    if isinstance(raw, bool | int | float | np.integer | np.floating | np.bool_):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            return math.nan
    else:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _category_bin(feature: CategoricalShares, raw: object) -> int:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return len(feature.categories) + 2
    if isinstance(raw, bool | np.bool_) or (isinstance(raw, float) and raw.is_integer()):
        key = str(int(raw))
    else:
        key = str(raw)
    if key in feature.categories:
        return feature.categories.index(key)
    return (
        len(feature.categories)
        if key in feature.other_keys or feature.other_overflow
        else len(feature.categories) + 1
    )


NUMERIC_VALUES = st.one_of(
    st.none(),
    st.integers(-10, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12.5", " 40 ", "abc", "", "nan", "inf", "1e3"]),
    st.booleans(),
)
CATEGORY_VALUES = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from(
        ["North", "South", "Central", "Offshore", "DSL", "Fiber optic", "No", "Yes", "M2M", "Two year"]
    ),
    st.integers(0, 3),
    st.floats(0, 2),
    st.booleans(),
    st.text(max_size=4),
)


@st.composite
def records(draw: st.DrawFn, spec: DatasetSpec) -> dict[str, object]:
    record: dict[str, object] = {}
    for name in spec.features.numerical:
        if draw(st.booleans()) or draw(st.booleans()):  # absent keys count as missing
            record[name] = draw(NUMERIC_VALUES)
    for name in spec.features.categorical:
        if draw(st.booleans()) or draw(st.booleans()):
            record[name] = draw(CATEGORY_VALUES)
    return record


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_counts_equal_the_plain_implementation_on_odd_records(
    data: st.DataObject, profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    batch = data.draw(st.lists(records(synthetic_spec), min_size=1, max_size=20))
    probabilities = data.draw(st.lists(st.floats(0, 1), min_size=len(batch), max_size=len(batch)))
    accumulator = DriftAccumulator(profile, synthetic_spec)
    for record, probability in zip(batch, probabilities, strict=True):
        accumulator.add(record, probability)
    np.testing.assert_array_equal(
        accumulator.snapshot_and_reset(), plain_counts(profile, batch, probabilities)
    )


def test_numpy_scalars_and_unhashable_values_count_like_their_python_values(
    profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    odd = {
        "age": np.int64(40),
        "tenure_months": np.float32(3.0),
        "region": np.str_("North"),
        "gender": ["Male"],
    }
    plain = {"age": 40, "tenure_months": 3.0, "region": "North", "gender": "['Male']"}
    a, b = DriftAccumulator(profile), DriftAccumulator(profile)
    a.add(odd, 0.3)
    b.add(plain, 0.3)
    np.testing.assert_array_equal(a.snapshot_and_reset(), b.snapshot_and_reset())


def test_counts_equal_the_batch_counts_of_drifted_frames(
    profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    accumulator = DriftAccumulator(profile, synthetic_spec)
    for drift in (None, "price_increase", "encoding_change", "new_segment"):
        frame = generate_customers(2_000, seed=77, drift=drift)
        frame.loc[frame.index[:50], "age"] = None
        frame["monthly_charges"] = frame["monthly_charges"].astype(object)
        frame.loc[frame.index[50:100], "monthly_charges"] = "n/a"
        proba = frame["true_churn_probability"].to_numpy()
        for record, p in zip(frame[synthetic_spec.feature_columns].to_dict("records"), proba, strict=True):
            accumulator.add(record, p)
        np.testing.assert_array_equal(accumulator.snapshot_and_reset(), frame_counts(profile, frame, proba))


def test_snapshot_starts_a_new_window_and_windows_merge(profile: ReferenceProfile) -> None:
    accumulator = DriftAccumulator(profile)
    records = generate_customers(300, seed=4).to_dict("records")
    for record in records[:100]:
        accumulator.add(record, 0.2)
    assert accumulator.total == 100
    first = accumulator.snapshot_and_reset()
    assert accumulator.total == 0
    for record in records[100:]:
        accumulator.add(record, 0.2)
    peeked = accumulator.peek()
    second = accumulator.snapshot_and_reset()
    np.testing.assert_array_equal(peeked, second)
    assert first[0] == 100
    assert second[0] == 200
    everything = DriftAccumulator(profile)
    for record in records:
        everything.add(record, 0.2)
    np.testing.assert_array_equal(merge(first, second), everything.snapshot_and_reset())
    assert first.dtype == np.int64


def test_counts_round_trip_through_bytes(profile: ReferenceProfile) -> None:
    accumulator = DriftAccumulator(profile)
    accumulator.add({"age": 30, "region": "North"}, 0.4)
    counts = accumulator.snapshot_and_reset()
    np.testing.assert_array_equal(decode_counts(encode_counts(counts), accumulator.size), counts)
    with pytest.raises(DataError, match="another layout"):
        decode_counts(encode_counts(counts), accumulator.size + 1)


def test_merge_refuses_other_layouts_and_nothing(profile: ReferenceProfile) -> None:
    with pytest.raises(DataError, match="different layouts"):
        merge(np.zeros(3, dtype=np.int64), np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match="no counts"):
        merge()


def test_unknown_keys_count_as_other_when_training_had_too_many_rare_keys(
    synthetic_spec: DatasetSpec,
) -> None:
    training = generate_customers(2_000, seed=8)
    profile = build_profile(
        training, synthetic_spec, training["true_churn_probability"], max_categories=2, max_other_keys=0
    )
    region = profile.feature("region")
    assert isinstance(region, CategoricalShares)
    assert region.other_overflow
    accumulator = DriftAccumulator(profile)
    accumulator.add({"region": "Atlantis"}, 0.5)
    counts = accumulator.snapshot_and_reset()
    start = profile.layout().features["region"].start
    assert counts[start + 2] == 1  # other, not unseen (index 3)


def test_the_accumulator_checks_its_spec(profile: ReferenceProfile, telco_spec: DatasetSpec) -> None:
    with pytest.raises(ConfigError, match="do not match"):
        DriftAccumulator(profile, telco_spec)


def test_microseconds_per_call_on_generated_records(synthetic_spec: DatasetSpec) -> None:
    training = generate_customers(20_000, seed=12)
    profile = build_profile(training, synthetic_spec, training["true_churn_probability"])
    accumulator = DriftAccumulator(profile, synthetic_spec)
    frame: pd.DataFrame = generate_customers(5_000, seed=13)
    pairs = list(
        zip(
            frame[synthetic_spec.feature_columns].to_dict("records"),
            frame["true_churn_probability"].tolist(),
            strict=True,
        )
    )
    add = accumulator.add

    def run() -> None:
        for record, p in pairs:
            add(record, p)

    best = min(timeit.repeat(run, number=2, repeat=5)) / (2 * len(pairs)) * 1e6
    print(f"\nDriftAccumulator.add: {best:.2f} us per call ({len(synthetic_spec.feature_columns)} features)")
    assert best < 25.0  # ~3.3 us here; generous for a busy 2-core box


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_add_many_counts_bin_for_bin_as_add(
    data: st.DataObject, profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    """The batched fold serving uses off the request path gives exactly the counts of `add`."""
    batch = data.draw(st.lists(records(synthetic_spec), min_size=0, max_size=30))
    probabilities = data.draw(st.lists(st.floats(0, 1), min_size=len(batch), max_size=len(batch)))
    many = DriftAccumulator(profile, synthetic_spec)
    many.add_many(batch, probabilities)
    np.testing.assert_array_equal(many.snapshot_and_reset(), plain_counts(profile, batch, probabilities))


def test_add_many_takes_numpy_scalars_unhashables_and_drifted_frames(
    profile: ReferenceProfile, synthetic_spec: DatasetSpec
) -> None:
    odd = [
        {
            "age": np.int64(40),
            "tenure_months": np.float32(3.0),
            "region": np.str_("North"),
            "gender": ["Male"],
        },
        {"age": "41", "monthly_charges": float("inf"), "contract": "M2M", "gender": None},
    ]
    one, many = DriftAccumulator(profile), DriftAccumulator(profile)
    for record in odd:
        one.add(record, 0.3)
    many.add_many(odd, [0.3, 0.3])
    np.testing.assert_array_equal(one.snapshot_and_reset(), many.snapshot_and_reset())
    frame = generate_customers(3_000, seed=78, drift="encoding_change")
    proba = frame["true_churn_probability"].to_numpy()
    many.add_many(frame[synthetic_spec.feature_columns].to_dict("records"), proba.tolist())
    np.testing.assert_array_equal(many.snapshot_and_reset(), frame_counts(profile, frame, proba))
    with pytest.raises(DataError, match="2 records but 1 probabilities"):
        many.add_many(odd, [0.3])

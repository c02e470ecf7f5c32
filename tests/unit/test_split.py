"""assign_splits: fractions, stratification, determinism and the minimum class count."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from churnops.core.params import SplitParams
from churnops.core.split import FIT, HOLDOUT, VALIDATION, assign_splits
from churnops.errors import DataError

pytestmark = pytest.mark.unit

ROWS = 2_000


def labels(rows: int = ROWS, rate: float = 0.27, seed: int = 0) -> NDArray[np.int64]:
    out = np.zeros(rows, dtype=np.int64)
    positives = np.random.default_rng(seed).choice(rows, size=round(rows * rate), replace=False)
    out[positives] = 1
    return out


def test_every_row_gets_exactly_one_split() -> None:
    splits = assign_splits(labels(), SplitParams())
    assert splits.shape == (ROWS,)
    assert set(np.unique(splits)) == {FIT, VALIDATION, HOLDOUT}


@pytest.mark.parametrize(("holdout", "validation"), [(0.2, 0.15), (0.3, 0.25), (0.1, 0.5)])
def test_fractions_are_respected(holdout: float, validation: float) -> None:
    splits = assign_splits(labels(), SplitParams(holdout_fraction=holdout, validation_fraction=validation))
    n_holdout = int((splits == HOLDOUT).sum())
    n_validation = int((splits == VALIDATION).sum())
    assert abs(n_holdout - ROWS * holdout) <= 1
    # The validation fraction is of the training part (everything but the holdout).
    assert abs(n_validation - (ROWS - n_holdout) * validation) <= 1
    assert int((splits == FIT).sum()) == ROWS - n_holdout - n_validation


def test_positive_rate_is_stratified_per_split() -> None:
    y = labels(rate=0.13)
    splits = assign_splits(y, SplitParams())
    overall = y.mean()
    for name in (FIT, VALIDATION, HOLDOUT):
        assert abs(y[splits == name].mean() - overall) < 0.01, name


def test_same_seed_same_splits() -> None:
    y = labels()
    first = assign_splits(y, SplitParams(seed=3))
    second = assign_splits(y, SplitParams(seed=3))
    np.testing.assert_array_equal(first, second)


def test_different_seeds_give_different_splits() -> None:
    y = labels()
    first = assign_splits(y, SplitParams(seed=3))
    second = assign_splits(y, SplitParams(seed=4))
    assert (first != second).any()
    assert (first == HOLDOUT).sum() == (second == HOLDOUT).sum()


@pytest.mark.parametrize(("positives", "negatives"), [(4, 200), (200, 3), (0, 50)])
def test_too_few_of_a_class_is_a_data_error_with_counts(positives: int, negatives: int) -> None:
    y = np.array([1] * positives + [0] * negatives, dtype=np.int64)
    with pytest.raises(DataError, match=rf"{positives} positive and {negatives} negative"):
        assign_splits(y, SplitParams())


def test_five_of_each_class_is_enough() -> None:
    y = np.array([1] * 5 + [0] * 45, dtype=np.int64)
    splits = assign_splits(y, SplitParams(holdout_fraction=0.2, validation_fraction=0.25))
    assert (splits == HOLDOUT).sum() == 10

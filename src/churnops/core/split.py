"""Fixed stratified splits: fit / validation / holdout, decided by params.yaml alone."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from churnops.core.params import SplitParams
from churnops.errors import DataError

FIT, VALIDATION, HOLDOUT = "fit", "validation", "holdout"


def assign_splits(labels: NDArray[np.int64], params: SplitParams) -> NDArray[np.str_]:
    """Label each row fit / validation / holdout, stratified on the target."""
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 5:
        raise DataError(
            f"target has {counts[1]} positive and {counts[0]} negative rows: need at least 5 of each to split"
        )
    rows = np.arange(len(labels))
    rest, holdout = train_test_split(
        rows, test_size=params.holdout_fraction, stratify=labels, random_state=params.seed
    )
    fit, validation = train_test_split(
        rest, test_size=params.validation_fraction, stratify=labels[rest], random_state=params.seed
    )
    out = np.empty(len(labels), dtype="<U10")
    out[fit], out[validation], out[holdout] = FIT, VALIDATION, HOLDOUT
    return out

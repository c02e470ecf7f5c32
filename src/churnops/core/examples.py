"""Example rows that belong to no customer: for golden requests and MLflow's input example.

Both are pickled or logged beside the model, so they must not be a real customer's record:
each feature is drawn on its own from the training rows (no row of the result matches a
row of the data except by chance), and the spec's PII columns are left missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.core.spec import DatasetSpec


def synthetic_rows(frame: pd.DataFrame, spec: DatasetSpec, n: int = 5, seed: int = 0) -> pd.DataFrame:
    """`n` rows of the spec's features, column by column resampled; PII columns all missing."""
    rng = np.random.default_rng(seed)
    pii = set(spec.pii)
    columns = {}
    for column in spec.feature_columns:
        values = frame[column].to_numpy(dtype=object)
        if column in pii or len(values) == 0:
            columns[column] = [None] * n
        else:
            columns[column] = list(values[rng.integers(0, len(values), size=n)])
    return pd.DataFrame(columns, columns=spec.feature_columns)

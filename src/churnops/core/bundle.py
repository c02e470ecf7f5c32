"""The deployable unit: fitted transformer + classifier + decision threshold + metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from churnops.core.candidates import Classifier
from churnops.core.spec import DatasetSpec

if TYPE_CHECKING:
    from churnops.core.features import FeatureTransformer


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to score raw customer rows, in training and in serving alike."""

    spec: DatasetSpec
    transformer: FeatureTransformer
    classifier: Classifier
    threshold: float
    candidate: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, frame: pd.DataFrame) -> NDArray[np.float64]:
        """Churn probabilities for raw rows (columns not in the spec are ignored)."""
        return self.classifier.predict_proba(self.transformer.transform(frame))

"""CompiledModel: what scoring needs from a ModelBundle, without the training library.

A bundle's classifier holds the LightGBM/XGBoost/sklearn object, whose import alone costs
seconds; once compiled into a FastModel the trees are plain arrays, so a compiled model
loads with numpy and numba only (batch scoring caches it per registered version).
"""

from __future__ import annotations

from dataclasses import dataclass

from churnops.core.bundle import ModelBundle
from churnops.core.fast_model import FastModel
from churnops.core.features import FeatureTransformer
from churnops.core.spec import DatasetSpec


@dataclass(frozen=True)
class CompiledModel:
    """Spec, fitted transformer, compiled classifier and decision threshold of one model version."""

    spec: DatasetSpec
    transformer: FeatureTransformer
    fast: FastModel
    threshold: float
    candidate: str

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> CompiledModel:
        fast = FastModel.build(
            bundle.classifier, bundle.transformer.output_sources, bundle.spec.feature_columns
        )
        return cls(bundle.spec, bundle.transformer, fast, bundle.threshold, bundle.candidate)

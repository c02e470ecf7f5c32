"""The MLflow pyfunc wrapper around a ModelBundle: `mlflow models serve` and `pyfunc.load_model` use it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from churnops.core.bundle import ModelBundle

BUNDLE_ARTIFACT = "bundle"
BUNDLE_FILE = "bundle.pkl"


def save_bundle(bundle: ModelBundle, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(bundle, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load_bundle(path: Path) -> ModelBundle:
    with path.open("rb") as handle:
        # bandit B301: the bundle artifact churnops itself logged
        bundle = pickle.load(handle)  # nosec B301
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"{path} does not hold a churnops ModelBundle")
    return bundle


# ChurnModel validates and coerces its own input (the bundled transformer); MLflow's hint-based
# validation would only reject what the transformer handles. MLflow checks the hints when the class
# is created, under its own "once" filter that a plain filterwarnings cannot override: the reminder
# is recorded (and dropped) here, and MLflow caches the check for later.
with warnings.catch_warnings(record=True):

    class ChurnModel(PythonModel):
        """predict(raw DataFrame) -> churn probabilities; the bundle travels as an artifact."""

        def load_context(self, context: Any) -> None:
            self.bundle = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))
            # One thread per request path: OpenMP pools fight each other across workers. A calibrated
            # model reads its base model's booster through; a blend has it in its tree member.
            classifier = self.bundle.classifier
            booster = getattr(getattr(classifier, "tree", classifier), "booster", None)
            if booster is not None and hasattr(booster, "set_param"):
                booster.set_param({"nthread": 1})

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # MLflow reads hints as a schema
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return np.asarray(self.bundle.predict_proba(frame), dtype=np.float64)

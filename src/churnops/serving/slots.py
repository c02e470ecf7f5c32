"""Blue/green model slots: a verified model per variant, swapped atomically.

A request takes the slot it starts with and finishes on it, so in-flight
requests complete on the version that took them while new ones see the swap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnops.core.bundle import ModelBundle
from churnops.core.drift_accumulator import DriftAccumulator
from churnops.core.drift_profile import ReferenceProfile
from churnops.core.fast_model import FastModel
from churnops.errors import ChurnopsError, RegistryError

logger = logging.getLogger(__name__)

CHAMPION = "champion"
GOLDEN_TOLERANCE = 1e-6


@dataclass
class ModelSlot:
    """One loaded model version: the bundle, its compiled scorer and a reusable feature row."""

    model_name: str
    version: str
    variant: str
    bundle: ModelBundle
    fast: FastModel
    loaded_at: float = field(default_factory=time.time)
    row: np.ndarray = field(init=False)
    drift: DriftAccumulator | None = field(init=False, default=None)  # None: no reference profile
    # Predictions not yet folded into `drift` (serving.monitoring folds them every few tens of ms).
    drift_pending: list[tuple[Mapping[str, Any], float]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        # Reused by every request on this slot: the event loop runs one request's scoring at a time.
        self.row = self.new_row()
        self.drift = _accumulator(self)

    def new_row(self) -> np.ndarray:
        return np.zeros(self.bundle.transformer.n_outputs, dtype=np.float64)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def score(
        self, record: Mapping[str, Any], row: np.ndarray | None = None
    ) -> tuple[float, list[tuple[str, float]]]:
        """Probability and the top-3 reason codes for one raw feature record. `row` defaults to the
        slot's own buffer, which only the event loop may use (it scores one request at a time);
        scoring in another thread passes a buffer of its own (`new_row`)."""
        row = self.row if row is None else row
        self.bundle.transformer.transform_one(record, out=row)
        probability, contributions = self.fast.score_one(row)
        return probability, self.fast.top_reasons(contributions, 3)

    def check_golden(self) -> int:
        """Score the golden requests saved at training; raise when any answer differs."""
        golden = self.bundle.metadata.get("golden", [])
        for case in golden:
            probability, _ = self.score(case["features"])
            if not math.isclose(probability, case["probability"], abs_tol=GOLDEN_TOLERANCE):
                raise RegistryError(
                    f"{self.model_name} v{self.version}: golden request scored {probability:.6f}, "
                    f"expected {case['probability']:.6f}"
                )
        return len(golden)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "version": self.version,
            "variant": self.variant,
            "candidate": self.bundle.candidate,
            "threshold": self.threshold,
            "feature_set_version": self.bundle.metadata.get("feature_set_version"),
            "loaded_at": self.loaded_at,
        }


def _accumulator(slot: ModelSlot) -> DriftAccumulator | None:
    """This slot's drift window, from the version's reference profile; a version without one (or with
    a malformed one) still serves, and monitoring says which command makes one."""
    stored = slot.bundle.metadata.get("reference_profile")
    if stored is None:
        return None
    try:
        return DriftAccumulator(ReferenceProfile.from_dict(stored), slot.bundle.spec)
    except ChurnopsError as err:
        logger.warning("%s v%s: reference profile unusable (%s)", slot.model_name, slot.version, err)
        return None


def build_slot(model_name: str, version: str, variant: str, bundle: ModelBundle) -> ModelSlot:
    """Compile, warm up and verify a bundle; only a slot that passes may serve."""
    fast = FastModel.build(bundle.classifier, bundle.transformer.output_sources, bundle.spec.feature_columns)
    fast.warm_up()
    slot = ModelSlot(model_name, version, variant, bundle, fast)
    checked = slot.check_golden()
    logger.info("loaded %s v%s as %s (%d golden requests verified)", model_name, version, variant, checked)
    return slot


class SlotManager:
    """Variant -> live slot; replaced copy-on-write so readers never see a half-updated map."""

    def __init__(self) -> None:
        self._slots: dict[str, ModelSlot] = {}

    def get(self, variant: str = CHAMPION) -> ModelSlot | None:
        return self._slots.get(variant)

    @property
    def champion(self) -> ModelSlot | None:
        return self._slots.get(CHAMPION)

    def swap(self, slot: ModelSlot) -> ModelSlot | None:
        """Make `slot` live for its variant in one reference assignment; returns the slot it replaced."""
        previous = self._slots.get(slot.variant)
        self._slots = {**self._slots, slot.variant: slot}
        return previous

    def all(self) -> list[ModelSlot]:
        return list(self._slots.values())

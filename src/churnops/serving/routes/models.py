"""Models: champion, challenger, variants and the live slots."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from churnops.core.auth import PREDICT
from churnops.io.registry import CHALLENGER
from churnops.serving.auth import requires
from churnops.serving.deps import StateDep
from churnops.serving.dto import ModelsResponse
from churnops.serving.routes._common import AUTH_ERRORS

router = APIRouter(tags=["models"], dependencies=[requires(PREDICT)], responses=AUTH_ERRORS)


@router.get("/v1/models", response_model=ModelsResponse)
async def models(state: StateDep) -> dict[str, Any]:
    """Champion, challenger, variants and the live serving slots."""
    champion = state.slots.champion
    challenger = state.slots.get(CHALLENGER)
    return {
        "model_name": state.model_name,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
        "variants": list(state.settings.variants),
        "slots": [slot.describe() for slot in state.slots.all()],
        "experiment": _experiment(state),
        "online_store": {
            "kind": state.features.kind,
            "feature_set_version": state.feature_set_version,
            **state.features.stats(),
        },
    }


def _experiment(state: StateDep) -> dict[str, Any] | None:
    """The running experiment this worker routes by: arms and shadows with their pinned versions."""
    experiment = state.experiment
    if experiment is None:
        return None
    return {
        "name": experiment.name,
        "revision": experiment.revision,
        "arms": {name: route.slot.version for name, route in experiment.arms.items()},
        "weights": experiment.definition.weights(),
        "shadows": {name: route.slot.version for name, route in experiment.shadows.items()},
    }

"""Which aliases a newly registered version gets (the full promotion gates come later)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AliasDecision:
    """Aliases to set for the new version, and why."""

    champion: bool
    challenger: bool
    reason: str


def decide_aliases(
    new_roc_auc: float, champion_roc_auc: float | None, champion_version: str | None
) -> AliasDecision:
    """First version: champion. Later: challenger, and champion only if it beats the champion's
    ROC AUC on the same holdout (a tie keeps the incumbent)."""
    if champion_version is None:
        return AliasDecision(champion=True, challenger=False, reason="first version: no champion yet")
    if champion_roc_auc is None or math.isnan(champion_roc_auc):
        return AliasDecision(
            champion=False,
            challenger=True,
            reason=f"champion v{champion_version} cannot score this holdout: kept as champion",
        )
    if new_roc_auc > champion_roc_auc:
        return AliasDecision(
            champion=True,
            challenger=False,
            reason=f"ROC AUC {new_roc_auc:.4f} beats champion v{champion_version} ({champion_roc_auc:.4f})",
        )
    return AliasDecision(
        champion=False,
        challenger=True,
        reason=(
            f"ROC AUC {new_roc_auc:.4f} does not beat champion v{champion_version} ({champion_roc_auc:.4f})"
        ),
    )

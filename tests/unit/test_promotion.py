"""decide_aliases: which aliases a newly registered version gets."""

from __future__ import annotations

import math

import pytest

from churnops.core.promotion import AliasDecision, decide_aliases

pytestmark = pytest.mark.unit


def test_first_version_becomes_champion() -> None:
    decision = decide_aliases(0.61, None, None)
    assert decision == AliasDecision(champion=True, challenger=False, reason=decision.reason)
    assert "first version" in decision.reason


def test_first_version_is_champion_even_with_a_low_score() -> None:
    assert decide_aliases(0.5, None, None).champion


def test_better_version_becomes_champion() -> None:
    decision = decide_aliases(0.85, 0.80, "3")
    assert decision.champion
    assert not decision.challenger
    assert "v3" in decision.reason
    assert "0.8500" in decision.reason
    assert "0.8000" in decision.reason


@pytest.mark.parametrize("new", [0.80, 0.79, 0.5], ids=["tie", "slightly-worse", "much-worse"])
def test_equal_or_worse_version_is_challenger_only(new: float) -> None:
    decision = decide_aliases(new, 0.80, "2")
    assert not decision.champion
    assert decision.challenger
    assert "does not beat" in decision.reason
    assert "v2" in decision.reason


@pytest.mark.parametrize("champion_auc", [None, math.nan])
def test_champion_that_cannot_score_keeps_alias_and_new_is_challenger(champion_auc: float | None) -> None:
    decision = decide_aliases(0.99, champion_auc, "7")
    assert not decision.champion
    assert decision.challenger
    assert "v7" in decision.reason
    assert "cannot score" in decision.reason


def test_decision_is_frozen() -> None:
    decision = decide_aliases(0.9, 0.8, "1")
    with pytest.raises(AttributeError):
        decision.champion = False  # type: ignore[misc]

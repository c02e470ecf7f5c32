"""The discrimination gate with known truth, on 20,000 evaluation rows: how often equal-quality
challengers are promoted (should be at most alpha) and how often one truly better by 0.02 AUC is
(the power). Prints the figures it measures (-s)."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.core.gate_policy import DiscriminationGate
from churnops.core.gates import discrimination_gate
from tests.model.known_quality import customers, predict

pytestmark = [pytest.mark.unit, pytest.mark.slow]

ROWS = 20_000
ALPHA = 0.05
CHAMPION_ERROR = 1.0  # AUC 0.729
# Candidate error -> true AUC gain over the champion (measured on 4M rows).
BETTER_BY = {0.005: 0.94, 0.01: 0.885, 0.02: 0.767}


def pair(seed: int, candidate_error: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two independently trained models' scores on the same evaluation rows."""
    rng = np.random.default_rng(seed)
    logit, y = customers(rng, ROWS)
    return y, predict(rng, logit, candidate_error), predict(rng, logit, CHAMPION_ERROR)


def promoted(gate: DiscriminationGate, candidate_error: float, runs: int, offset: int) -> int:
    return sum(discrimination_gate(*pair(offset + s, candidate_error), gate).passed for s in range(runs))


def test_delong_gate_false_promotions_and_power() -> None:
    gate = DiscriminationGate(alpha=ALPHA, method="delong")
    equal = promoted(gate, CHAMPION_ERROR, 100, 0)
    power = {
        gain: promoted(gate, error, 100, 10_000 * (i + 1))
        for i, (gain, error) in enumerate(BETTER_BY.items())
    }
    print(
        f"\nDeLong gate, {ROWS} rows, alpha {ALPHA}: {equal}/100 equal-quality models promoted; "
        f"promoted when truly better by AUC +0.005 / +0.01 / +0.02: "
        f"{power[0.005]}% / {power[0.01]}% / {power[0.02]}%"
    )
    assert equal <= 100 * ALPHA
    assert power[0.02] >= 80


def test_paired_bootstrap_gate_false_promotions_and_power() -> None:
    gate = DiscriminationGate(alpha=ALPHA, method="paired_bootstrap", resamples=2000)
    equal = promoted(gate, CHAMPION_ERROR, 30, 50_000)
    better = promoted(gate, BETTER_BY[0.02], 30, 60_000)
    print(
        f"\npaired bootstrap gate (2000 resamples), {ROWS} rows: {equal}/30 equal promoted; power {better}/30"
    )
    assert equal <= 30 * ALPHA
    assert better >= 24

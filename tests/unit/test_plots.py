"""Every plot writes a non-empty PNG, quickly, without leaving figures open."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from churnops.core.metrics import reliability_curve
from churnops.core.params import BusinessParams
from churnops.core.threshold import choose_threshold
from churnops.io.plots import plot_calibration, plot_importance, plot_pr, plot_profit, plot_roc

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BUSINESS = BusinessParams(contact_cost=5.0, saved_customer_value=200.0, offer_success_rate=0.3)

Scored = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def scored() -> Scored:
    rng = np.random.default_rng(0)
    proba = rng.random(1_000)
    return (rng.random(1_000) < proba).astype(int), proba


def assert_png(path: Path) -> None:
    assert path.exists()
    assert path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_every_plot_writes_a_png(tmp_path: Path, scored: Scored) -> None:
    y, p = scored
    names = [f"feature_{i}" for i in range(30)]
    paths = [
        plot_roc(y, p, tmp_path / "roc.png", "lightgbm"),
        plot_pr(y, p, tmp_path / "pr.png", "lightgbm"),
        plot_calibration(reliability_curve(y, p, 10), tmp_path / "calibration.png"),
        plot_importance(names, np.linspace(-1, 2, 30), tmp_path / "importance.png", top=10),
        plot_profit(choose_threshold(y, p, BUSINESS), tmp_path / "profit.png"),
    ]
    assert [path.name for path in paths] == [
        "roc.png",
        "pr.png",
        "calibration.png",
        "importance.png",
        "profit.png",
    ]
    for path in paths:
        assert_png(path)


def test_plots_create_parent_directories(tmp_path: Path, scored: Scored) -> None:
    y, p = scored
    assert_png(plot_roc(y, p, str(tmp_path / "deep" / "er" / "roc.png"), "m"))


def test_single_class_does_not_crash(tmp_path: Path) -> None:
    y = np.zeros(20, dtype=int)
    p = np.linspace(0, 1, 20)
    assert_png(plot_roc(y, p, tmp_path / "roc.png", "m"))
    assert_png(plot_pr(y, p, tmp_path / "pr.png", "m"))


def test_no_pyplot_figures_are_left_open(tmp_path: Path, scored: Scored) -> None:
    import matplotlib.pyplot as plt

    y, p = scored
    before = len(plt.get_fignums())
    plot_pr(y, p, tmp_path / "pr.png", "m")
    assert len(plt.get_fignums()) == before


def test_importance_rejects_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names"):
        plot_importance(["a", "b"], [1.0], tmp_path / "x.png")


def test_a_plot_is_fast_once_matplotlib_is_loaded(tmp_path: Path, scored: Scored) -> None:
    y, p = scored
    plot_roc(y, p, tmp_path / "warm.png", "m")  # pays the one-off import and font-cache cost
    start = time.perf_counter()
    plot_roc(y, p, tmp_path / "roc.png", "m")
    assert time.perf_counter() - start < 1.0  # ~0.15 s here; loose for busy CI machines

"""Evaluation plots written as PNG files for the model card and the MLflow run.

Figures are built with matplotlib's object API on an Agg canvas chosen inside each
function: nothing touches pyplot's global figure registry or the process-wide backend,
so the functions are safe on headless servers and in threads, and each figure is freed
as soon as it is saved. matplotlib is imported lazily because it costs ~0.3 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from churnops.core.metrics import ReliabilityCurve, check_scores
from churnops.core.threshold import ThresholdChoice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_SIZE = (6.0, 4.5)
_DPI = 100


def plot_roc(y_true: ArrayLike, proba: ArrayLike, path: str | Path, label: str = "model") -> Path:
    """ROC curve with its AUC in the legend and the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, p = check_scores(y_true, proba)
    fig, ax = _figure("ROC curve", "False positive rate", "True positive rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC = 0.500)")
    if _both_classes(y):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, linewidth=2, label=f"{label} (AUC = {roc_auc_score(y, p):.3f})")
    else:
        ax.plot([], [], label=f"{label} (AUC undefined: one class)")
    _unit_limits(ax)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(y_true: ArrayLike, proba: ArrayLike, path: str | Path, label: str = "model") -> Path:
    """Precision-recall curve with average precision in the legend and the prevalence baseline."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, p = check_scores(y_true, proba)
    fig, ax = _figure("Precision-recall curve", "Recall", "Precision")
    prevalence = float(y.mean())
    ax.axhline(prevalence, linestyle="--", color="grey", linewidth=1, label=f"prevalence ({prevalence:.3f})")
    if _both_classes(y):
        precision, recall, _ = precision_recall_curve(y, p)
        ap = average_precision_score(y, p)
        ax.step(recall, precision, where="post", linewidth=2, label=f"{label} (AP = {ap:.3f})")
    else:
        ax.plot([], [], label=f"{label} (AP undefined: one class)")
    _unit_limits(ax)
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_calibration(curve: ReliabilityCurve, path: str | Path) -> Path:
    """Reliability diagram: observed churn rate against mean predicted probability per bin."""
    fig, ax = _figure(
        f"Calibration (ECE = {curve.ece:.3f}, {curve.n_bins} bins)",
        "Mean predicted probability",
        "Observed churn rate",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    # Marker area grows with the bin's row count, so sparse bins read as less certain.
    sizes = 20 + 280 * np.asarray(curve.counts) / max(curve.counts)
    ax.plot(curve.mean_predicted, curve.observed_frequency, color="C0", linewidth=1.5, label="model")
    ax.scatter(curve.mean_predicted, curve.observed_frequency, s=sizes, color="C0", alpha=0.7, zorder=3)
    _unit_limits(ax)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_importance(names: Sequence[str], values: ArrayLike, path: str | Path, top: int = 20) -> Path:
    """Horizontal bars of the `top` features by absolute importance, largest at the top."""
    importance = np.asarray(values, dtype=np.float64)
    if importance.shape != (len(names),):
        raise ValueError(f"{len(names)} names but importance values of shape {importance.shape}")
    order = np.argsort(-np.abs(importance), kind="stable")[:top][::-1]
    height = max(_SIZE[1], 0.3 * order.size + 1.2)
    fig, ax = _figure(f"Feature importance (top {order.size})", "Importance", "", size=(_SIZE[0], height))
    ax.barh([names[i] for i in order], importance[order], color="C0")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", visible=False)
    return _save(fig, path)


def plot_profit(choice: ThresholdChoice, path: str | Path) -> Path:
    """Expected profit against the threshold, with the chosen threshold marked."""
    thresholds, profits = zip(*choice.profit_curve, strict=True) if choice.profit_curve else ((), ())
    fig, ax = _figure("Expected profit by threshold", "Threshold (contact if probability >= t)", "Profit")
    ax.plot(thresholds, profits, linewidth=2, color="C0", label="expected profit")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axvline(
        choice.threshold,
        linestyle="--",
        color="C3",
        label=f"chosen t = {choice.threshold:.3f} (profit {choice.expected_profit:,.0f}, "
        f"contacts {choice.contacted_fraction:.1%})",
    )
    ax.set_xlim(0.0, 1.0)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _figure(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = _SIZE) -> tuple[Figure, Axes]:
    """A new figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target, format="png")
    finally:
        fig.clear()  # drop artists now rather than when the GC gets round to the figure
    return target


def _unit_limits(ax: Axes) -> None:
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)


def _both_classes(y: np.ndarray) -> bool:
    return bool(np.unique(y).size == 2)

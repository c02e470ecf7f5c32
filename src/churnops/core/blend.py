"""A blend of the best linear and the best tree candidate, in log-odds.

The blend's log-odds are `w * linear + (1 - w) * tree`, so its contributions are the same
weighted sum of the members' contributions (reason codes stay exact: bias plus contributions
is the blend's margin) and the compiled fast path walks the trees once and adds a dot product.
`w` is chosen on the validation rows from a grid; the blend is kept only when it beats the
best single candidate there by more than `MIN_GAIN`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from churnops.core.candidates import Classifier, LinearClassifier

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int_]
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95: both members take part
MIN_GAIN = 0.0005  # in the selection metric, over the best single candidate on validation
LINEAR_KINDS = ("logistic_regression",)
TREE_KINDS = ("lightgbm", "xgboost")


class MarginClassifier(Classifier, Protocol):
    def margin(self, features: FloatArray) -> FloatArray:
        """Log-odds per row."""
        ...


@dataclass
class BlendClassifier:
    """`weights[0] * linear + weights[1] * tree` in log-odds; `names` are the member candidates."""

    linear: LinearClassifier
    tree: MarginClassifier
    weights: tuple[float, float]
    names: tuple[str, str]
    kind: str = "blend"

    def margin(self, features: FloatArray) -> FloatArray:
        w_linear, w_tree = self.weights
        return np.asarray(w_linear * self.linear.margin(features) + w_tree * self.tree.margin(features))

    def predict_proba(self, features: FloatArray) -> FloatArray:
        return np.asarray(1.0 / (1.0 + np.exp(-self.margin(features))), dtype=np.float64)

    def contributions(self, features: FloatArray) -> FloatArray:
        w_linear, w_tree = self.weights
        return np.asarray(
            w_linear * self.linear.contributions(features) + w_tree * self.tree.contributions(features)
        )

    def importance(self) -> FloatArray:
        """The members' importances, each normalised to sum 1, weighted."""
        total = np.zeros_like(self.linear.importance())
        for weight, member in zip(self.weights, (self.linear, self.tree), strict=True):
            values = member.importance()
            total += weight * values / (values.sum() or 1.0)
        return total

    def describe(self) -> str:
        return " + ".join(f"{w:.2f} x {n}" for w, n in zip(self.weights, self.names, strict=True))


@dataclass(frozen=True)
class BlendChoice:
    """The best weight on validation and how the blend compares with the best single candidate."""

    weights: tuple[float, float]
    names: tuple[str, str]
    score: float
    best_single: float
    pays: bool


def choose_blend(
    candidates: Mapping[str, tuple[str, Classifier, float]],
    x_val: FloatArray,
    y_val: IntArray,
    metric: str,
) -> BlendChoice | None:
    """The weight of the best linear and the best tree candidate ({name: (kind, classifier,
    validation score)}); None when one of the two is missing."""
    # Imported here: the compiled fast path imports this module, and batch scoring must not pay
    # for scikit-learn (core.metrics).
    from churnops.core.search import better, score

    linear = _best(candidates, LINEAR_KINDS, metric)
    tree = _best(candidates, TREE_KINDS, metric)
    if linear is None or tree is None:
        return None
    lin_clf, tree_clf = candidates[linear][1], candidates[tree][1]
    if not isinstance(lin_clf, LinearClassifier) or not hasattr(tree_clf, "margin"):
        return None
    lin_margin, tree_margin = lin_clf.margin(x_val), tree_clf.margin(x_val)
    best_w, best_score = GRID[0], math.nan
    for w in GRID:
        value = score(metric, y_val, 1.0 / (1.0 + np.exp(-(w * lin_margin + (1 - w) * tree_margin))))
        if better(metric, value, best_score):
            best_w, best_score = w, value
    single = max(candidates[linear][2], candidates[tree][2], key=lambda v: -v if metric == "log_loss" else v)
    gain = (single - best_score) if metric == "log_loss" else (best_score - single)
    return BlendChoice((best_w, round(1 - best_w, 2)), (linear, tree), best_score, single, gain > MIN_GAIN)


def blend(choice: BlendChoice, linear: Classifier, tree: Classifier) -> BlendClassifier:
    if not isinstance(linear, LinearClassifier):
        raise TypeError(f"a blend's linear member must be a LinearClassifier, got {type(linear).__name__}")
    return BlendClassifier(linear, tree, choice.weights, choice.names)  # type: ignore[arg-type]


def _best(
    candidates: Mapping[str, tuple[str, Classifier, float]], kinds: Sequence[str], metric: str
) -> str | None:
    names = [name for name, (kind, _, value) in candidates.items() if kind in kinds and not math.isnan(value)]
    if not names:
        return None
    sign = -1.0 if metric == "log_loss" else 1.0
    return max(names, key=lambda name: sign * candidates[name][2])

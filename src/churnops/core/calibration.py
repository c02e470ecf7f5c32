"""Probability calibration chosen on validation data: none, Platt or isotonic, by log loss.

A `Calibration` is a monotone map from the model's probability to a calibrated one:

- `platt`: sigmoid(a * logit(p) + b), fitted by logistic regression on the logit;
- `isotonic`: a centred isotonic regression (Oron & Flournoy) on quantile bins of the
  validation scores: the pool-adjacent-violators fit, with one knot per pooled block at the
  block's mean score, joined linearly and anchored at (0, 0) and (1, 1). Unlike the step
  function of plain isotonic regression it is strictly increasing between knots, so it keeps
  the ranking (ROC AUC) and its slopes stay bounded: a served probability that differs from
  the library's in the last bits stays as close after calibration.

`choose_calibration` scores each method by cross-fitted log loss on the validation rows (fit on
k-1 folds, score the held-out fold) and keeps a more complex method only when it lowers log
loss by more than `MIN_GAIN`; the chosen map is then refitted on all validation rows.

The compiled fast path applies the same map in its kernels (`fast_model._calibrate`, from
`Calibration.kernel_args`); reason codes stay on the uncalibrated log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from churnops.core.candidates import Classifier

FloatArray = NDArray[np.float64]
Method = Literal["none", "platt", "isotonic"]
METHODS: tuple[Method, ...] = ("none", "platt", "isotonic")
METHOD_CODES: dict[Method, int] = {"none": 0, "platt": 1, "isotonic": 2}

# Probabilities are kept this far from 0 and 1: the logit stays finite, and an isotonic block
# with no churner still does not claim certainty.
EPS = 1e-6
MIN_GAIN = 1e-4  # log-loss improvement a more complex map must bring (in nats per row)
FOLDS = 5
MIN_ROWS_PER_BIN = 20
MAX_BINS = 200
MIN_ISOTONIC_ROWS = 200  # below this (or 20 rows of either class) isotonic is not tried


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map; `apply` is what the bundle uses, `kernel_args` what FastModel uses."""

    method: Method = "none"
    a: float = 1.0
    b: float = 0.0
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)  # cross-fitted validation log loss per method

    def apply(self, proba: FloatArray) -> FloatArray:
        """Calibrated probabilities for the model's probabilities."""
        p = np.asarray(proba, dtype=np.float64)
        if self.method == "platt":
            q = np.clip(p, EPS, 1.0 - EPS)
            return np.asarray(1.0 / (1.0 + np.exp(-(self.a * np.log(q / (1.0 - q)) + self.b))))
        if self.method == "isotonic":
            return np.asarray(np.interp(p, self.knots_x, self.knots_y), dtype=np.float64)
        return p

    def kernel_args(self) -> FloatArray:
        """The map as one float array for the numba kernels: [code, a, b, n, x_1..x_n, y_1..y_n]."""
        n = len(self.knots_x)
        head = [float(METHOD_CODES[self.method]), self.a, self.b, float(n)]
        return np.array([*head, *self.knots_x, *self.knots_y], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "validation_log_loss": dict(self.scores)}
        if self.method == "platt":
            out |= {"a": self.a, "b": self.b}
        if self.method == "isotonic":
            out["knots"] = len(self.knots_x)
        return out


IDENTITY = Calibration()


@dataclass
class CalibratedClassifier:
    """A classifier whose probabilities go through a calibration map.

    Contributions and importance are the base model's (log-odds before calibration); other
    attributes of the base model (booster, best_iteration) read through.
    """

    base: Classifier
    calibration: Calibration
    kind: str = ""

    def __post_init__(self) -> None:
        self.kind = self.kind or self.base.kind

    def predict_proba(self, features: FloatArray) -> FloatArray:
        return self.calibration.apply(self.base.predict_proba(features))

    def contributions(self, features: FloatArray) -> FloatArray:
        return self.base.contributions(features)

    def importance(self) -> FloatArray:
        return self.base.importance()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("base", "calibration", "kind"):  # unpickling, copy
            raise AttributeError(name)
        return getattr(self.base, name)


def calibrated(classifier: Classifier, calibration: Calibration) -> Classifier:
    """The classifier with `calibration` applied (itself when the map is the identity)."""
    base = classifier.base if isinstance(classifier, CalibratedClassifier) else classifier
    if calibration.method == "none":
        return base
    return CalibratedClassifier(base, calibration)


def uncalibrated(classifier: Classifier) -> Classifier:
    return classifier.base if isinstance(classifier, CalibratedClassifier) else classifier


def calibration_of(classifier: Classifier) -> Calibration:
    return classifier.calibration if isinstance(classifier, CalibratedClassifier) else IDENTITY


def choose_calibration(y: NDArray[np.int_], proba: FloatArray, seed: int = 0) -> Calibration:
    """The map with the lowest cross-fitted log loss on these validation rows, refitted on all."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    methods = _eligible(y)
    scores: dict[str, float] = {m: _cross_fitted_log_loss(m, y, p, seed) for m in methods}
    chosen: Method = "none"
    for method in methods[1:]:  # in order of complexity: a later one must beat the best so far
        if scores[method] < scores[chosen] - MIN_GAIN:
            chosen = method
    fitted = fit_calibration(chosen, y, p)
    return Calibration(fitted.method, fitted.a, fitted.b, fitted.knots_x, fitted.knots_y, scores)


def fit_calibration(method: Method, y: NDArray[np.int64], proba: FloatArray) -> Calibration:
    """Fit one calibration method on labelled probabilities."""
    if method == "platt":
        return _fit_platt(y, proba)
    if method == "isotonic":
        return _fit_isotonic(y, proba)
    return IDENTITY


def _eligible(y: NDArray[np.int64]) -> list[Method]:
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if min(n_pos, n_neg) < FOLDS:
        return ["none"]
    if len(y) < MIN_ISOTONIC_ROWS or min(n_pos, n_neg) < 20:
        return ["none", "platt"]
    return list(METHODS)


def _cross_fitted_log_loss(method: Method, y: NDArray[np.int64], p: FloatArray, seed: int) -> float:
    if method == "none":
        return _log_loss(y, p)
    from sklearn.model_selection import StratifiedKFold

    out = np.empty_like(p)
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for fit_idx, test_idx in folds.split(p, y):
        out[test_idx] = fit_calibration(method, y[fit_idx], p[fit_idx]).apply(p[test_idx])
    return _log_loss(y, out)


def _log_loss(y: NDArray[np.int64], p: FloatArray) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _fit_platt(y: NDArray[np.int64], proba: FloatArray) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    q = np.clip(proba, EPS, 1.0 - EPS)
    z = np.log(q / (1.0 - q)).reshape(-1, 1)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
    a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
    if a <= 0:  # a map that reverses the ranking: the model carries no usable signal here
        return IDENTITY
    return Calibration("platt", a=a, b=b)


def _fit_isotonic(y: NDArray[np.int64], proba: FloatArray) -> Calibration:
    """Centred isotonic regression on quantile bins of at least MIN_ROWS_PER_BIN rows."""
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(proba, kind="stable")
    bins = np.array_split(order, max(1, min(MAX_BINS, len(order) // MIN_ROWS_PER_BIN)))
    weight = np.array([len(b) for b in bins], dtype=np.float64)
    x = np.array([proba[b].mean() for b in bins])
    rate = np.array([y[b].mean() for b in bins])
    fitted = IsotonicRegression(y_min=EPS, y_max=1.0 - EPS).fit_transform(x, rate, sample_weight=weight)
    knots_x, knots_y = [0.0], [EPS]
    start = 0
    for end in range(1, len(x) + 1):  # one knot per pooled block: its weighted mean score
        if end == len(x) or fitted[end] != fitted[start]:
            w = weight[start:end]
            centre = float(np.sum(x[start:end] * w) / np.sum(w))
            if centre > knots_x[-1]:
                knots_x.append(centre)
                knots_y.append(max(float(fitted[start]), knots_y[-1]))
            start = end
    if knots_x[-1] < 1.0:
        knots_x.append(1.0)
        knots_y.append(max(1.0 - EPS, knots_y[-1]))
    return Calibration("isotonic", knots_x=tuple(knots_x), knots_y=tuple(knots_y))

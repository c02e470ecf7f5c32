"""FastModel: churn probability and raw-feature reason codes without pandas or the library's predict.

A fitted classifier is compiled once into flat numpy arrays and scored by numba kernels.
Reason codes are path attributions (Saabas, as in treeinterpreter): along a row's decision
path, each split's feature gets value(child) - value(parent), so that bias (the sum of the
root values) plus the contributions is exactly the raw margin. They are precomputed per
(tree, leaf) and already aggregated from the transformer's output columns onto the spec's
raw features (an output fed by several raw features, such as a cross, is split equally),
so scoring a row is: walk each tree to its leaf, add the leaf's margin and raw-feature vector.

Forest layout (`_Forest.args`): `nodes[i] = (feature, left, right, flags)` int32 and
`thresholds[i]` float64 over the internal nodes of all trees, then one node per leaf that
points to itself; flags bit 0 is default-left, bits 1-2 the missing type. Every split
reads "go left when x <= threshold": XGBoost's float32 test `float32(x) < t` is turned into
the equivalent double threshold at build time. `leaves[l] = (value, contribution per raw
feature)`. `schedule` holds the roots (deepest tree first), each tree's position in that
order and how many trees are still walking at each depth: rows without missing values step
all trees level by level without branches; rows with NaN (or LightGBM's near-zero values)
take the exact per-node rule of the engine (missing_type, default_left).

A calibrated classifier's map (`core.calibration`) is applied to the probability in the same
kernels (`_calibrate`); the contributions stay in the uncalibrated log-odds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from churnops.core.blend import BlendClassifier
from churnops.core.calibration import EPS as _CAL_EPS
from churnops.core.calibration import IDENTITY, CalibratedClassifier, Calibration
from churnops.core.candidates import Classifier, LightGBMClassifier, LinearClassifier, XGBoostClassifier

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
F = TypeVar("F", bound=Callable[..., Any])

_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_ZERO_MISSING, _NAN_MISSING = 1, 2
# LightGBM's kZeroThreshold (a float literal held in a double): values this close to 0 are
# left out of its sparse rows, i.e. read as 0, and count as missing under missing_type Zero.
_ZERO = float(np.float32(1e-35))
_CHUNK = 256  # rows per parallel task in the batch kernels


@functools.cache
def _warn_uncached() -> None:
    logger.warning("numba found no writable cache directory: FastModel kernels compile in every process")


def _kernel(parallel: bool = False) -> Callable[[F], F]:
    """numba-compile a kernel, cached on disk when numba finds a writable place (NUMBA_CACHE_DIR first)."""

    def compile_(func: F) -> F:
        try:
            return cast(F, numba.njit(cache=True, nogil=True, parallel=parallel)(func))
        except RuntimeError as err:  # read-only install and no writable cache directory
            if "cannot cache" not in str(err):
                raise
            _warn_uncached()
            return cast(F, numba.njit(nogil=True, parallel=parallel)(func))

    return compile_


@_kernel()
def _goes_left(x: float, threshold: float, flags: int, snap: bool) -> bool:
    """The engine's full rule: missing values, LightGBM's zero snapping and missing_type."""
    missing = flags >> 1
    if math.isnan(x):
        if missing == _NAN_MISSING:
            return (flags & 1) != 0
        x = 0.0
    if snap and abs(x) <= _ZERO:
        if missing == _ZERO_MISSING:
            return (flags & 1) != 0
        x = 0.0
    return x <= threshold


@_kernel()
def _needs_exact_walk(row: FloatArray, snap: bool) -> bool:
    for j in range(row.shape[0]):
        x = row[j]
        if math.isnan(x) or (snap and x != 0.0 and abs(x) <= _ZERO):
            return True
    return False


@_kernel()
def _calibrate(p: float, calib: FloatArray) -> float:
    """The bundle's calibration map (`Calibration.kernel_args`): identity, Platt or centred isotonic."""
    code = calib[0]
    if code == 0.0:
        return p
    if code == 1.0:
        q = min(max(p, _CAL_EPS), 1.0 - _CAL_EPS)
        return 1.0 / (1.0 + math.exp(-(calib[1] * math.log(q / (1.0 - q)) + calib[2])))
    n = int(calib[3])
    xs, ys = calib[4 : 4 + n], calib[4 + n : 4 + 2 * n]
    if p <= xs[0]:
        return float(ys[0])
    if p >= xs[n - 1]:
        return float(ys[n - 1])
    lo, hi = 0, n - 1  # xs[lo] < p < xs[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= p:
            lo = mid
        else:
            hi = mid
    # np.interp's formula, so the bundle's numpy path and this kernel agree to the last bits.
    return float(ys[lo] + (p - xs[lo]) * ((ys[hi] - ys[lo]) / (xs[hi] - xs[lo])))


@_kernel()
def _forest_margin(
    row: FloatArray,
    out: FloatArray,
    cur: NDArray[np.int32],
    nodes: NDArray[np.int32],
    thresholds: FloatArray,
    schedule: NDArray[np.int32],
    leaves: FloatArray,
    n_trees: int,
    n_internal: int,
    snap: bool,
    exact_only: bool,
    base: float,
    scale: float,
) -> float:
    cur[:] = schedule[:n_trees]  # roots, deepest trees first
    if exact_only or _needs_exact_walk(row, snap):
        for k in range(n_trees):
            node = cur[k]
            while node < n_internal:
                left = _goes_left(row[nodes[node, 0]], thresholds[node], nodes[node, 3], snap)
                node = nodes[node, 1] if left else nodes[node, 2]
            cur[k] = node
    else:
        # No missing value: step all trees one level at a time, without branches (leaves loop
        # on themselves), so the walks of different trees overlap instead of mispredicting.
        active = schedule[2 * n_trees :]
        for depth in range(active.shape[0]):
            for k in range(active[depth]):
                node = cur[k]
                cur[k] = nodes[node, 1 + np.int64(row[nodes[node, 0]] > thresholds[node])]
    margin = base
    for tree in range(n_trees):  # in the engine's order, so the margin matches it to the last bit
        leaf = cur[schedule[n_trees + tree]] - n_internal
        margin += leaves[leaf, 0]
        for r in range(out.shape[0]):
            out[r] += leaves[leaf, r + 1]
    return scale * margin


@_kernel()
def _forest_row(row: FloatArray, out: FloatArray, cur: NDArray[np.int32], *args: Any) -> float:
    """The forest's probability for one row; its path attributions are added to `out`."""
    return 1.0 / (1.0 + math.exp(-_forest_margin(row, out, cur, *args)))


@_kernel()
def _forest_one(row: FloatArray, out: FloatArray, calib: FloatArray, *args: Any) -> float:
    return _calibrate(_forest_row(row, out, np.empty(args[4], np.int32), *args), calib)


@_kernel(parallel=True)
def _forest_batch(
    matrix: FloatArray, proba: FloatArray, contrib: FloatArray, calib: FloatArray, *args: Any
) -> None:
    n = matrix.shape[0]
    for chunk in numba.prange((n + _CHUNK - 1) // _CHUNK):
        cur = np.empty(args[4], np.int32)
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            proba[i] = _calibrate(_forest_row(matrix[i], contrib[i], cur, *args), calib)


@_kernel()
def _linear_one(row: FloatArray, out: FloatArray, calib: FloatArray, *args: Any) -> float:
    return _calibrate(_linear_row(row, out, *args), calib)


@_kernel()
def _linear_margin(
    row: FloatArray,
    out: FloatArray,
    mean: FloatArray,
    std: FloatArray,
    coef: FloatArray,
    ptr: NDArray[np.int64],
    raw_index: NDArray[np.int64],
    weight: FloatArray,
    intercept: float,
) -> float:
    margin = intercept
    for j in range(row.shape[0]):
        z = (row[j] - mean[j]) / std[j] * coef[j]
        margin += z
        for e in range(ptr[j], ptr[j + 1]):
            out[raw_index[e]] += z * weight[e]
    return margin


@_kernel()
def _linear_row(row: FloatArray, out: FloatArray, *args: Any) -> float:
    return 1.0 / (1.0 + math.exp(-_linear_margin(row, out, *args)))


# -- blend: a linear model and a forest, both pre-scaled by their weights, summed in log-odds ----


@_kernel()
def _blend_row(row: FloatArray, out: FloatArray, cur: NDArray[np.int32], linear: Any, forest: Any) -> float:
    margin = _linear_margin(row, out, *linear) + _forest_margin(row, out, cur, *forest)
    return 1.0 / (1.0 + math.exp(-margin))


@_kernel()
def _blend_one(row: FloatArray, out: FloatArray, calib: FloatArray, linear: Any, forest: Any) -> float:
    return _calibrate(_blend_row(row, out, np.empty(forest[4], np.int32), linear, forest), calib)


@_kernel(parallel=True)
def _blend_batch(
    matrix: FloatArray, proba: FloatArray, contrib: FloatArray, calib: FloatArray, linear: Any, forest: Any
) -> None:
    n = matrix.shape[0]
    for chunk in numba.prange((n + _CHUNK - 1) // _CHUNK):
        cur = np.empty(forest[4], np.int32)
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            proba[i] = _calibrate(_blend_row(matrix[i], contrib[i], cur, linear, forest), calib)


@_kernel()
def _blend_reasons(
    matrix: FloatArray,
    proba: FloatArray,
    out_index: NDArray[np.int64],
    out_value: FloatArray,
    name_rank: NDArray[np.int64],
    calib: FloatArray,
    linear: Any,
    forest: Any,
) -> None:
    cur = np.empty(forest[4], np.int32)
    scratch = np.empty(name_rank.shape[0])
    for i in range(matrix.shape[0]):
        scratch[:] = 0.0
        proba[i] = _calibrate(_blend_row(matrix[i], scratch, cur, linear, forest), calib)
        _row_top_k(scratch, name_rank, out_index[i], out_value[i])


@_kernel()
def _row_top_k(
    values: FloatArray, name_rank: NDArray[np.int64], out_index: NDArray[np.int64], out_value: FloatArray
) -> None:
    """The k (= len(out_index)) entries of largest |value|, ties to the lower name rank (as `top_reasons`)."""
    k = out_index.shape[0]
    filled = 0
    for r in range(values.shape[0]):
        m = abs(values[r])
        slot = filled
        # Insertion into the k best so far, ordered by (|value| desc, name rank asc).
        while slot > 0:
            prev = out_index[slot - 1]
            pm = abs(values[prev])
            if pm > m or (pm == m and name_rank[prev] < name_rank[r]):
                break
            slot -= 1
        if slot >= k:
            continue
        for s in range(min(filled, k - 1), slot, -1):
            out_index[s] = out_index[s - 1]
        out_index[slot] = r
        filled = min(filled + 1, k)
    for s in range(k):
        out_value[s] = values[out_index[s]]


@_kernel(parallel=True)
def _top_k_batch(
    values: FloatArray, name_rank: NDArray[np.int64], out_index: NDArray[np.int64], out_value: FloatArray
) -> None:
    for i in numba.prange(values.shape[0]):
        _row_top_k(values[i], name_rank, out_index[i], out_value[i])


@_kernel()
def _forest_reasons(
    matrix: FloatArray,
    proba: FloatArray,
    out_index: NDArray[np.int64],
    out_value: FloatArray,
    name_rank: NDArray[np.int64],
    calib: FloatArray,
    *args: Any,
) -> None:
    """One thread: probability and top-k reasons per row; contributions live in one scratch row."""
    cur = np.empty(args[4], np.int32)
    scratch = np.empty(name_rank.shape[0])
    for i in range(matrix.shape[0]):
        scratch[:] = 0.0
        proba[i] = _calibrate(_forest_row(matrix[i], scratch, cur, *args), calib)
        _row_top_k(scratch, name_rank, out_index[i], out_value[i])


@_kernel()
def _linear_reasons(
    matrix: FloatArray,
    proba: FloatArray,
    out_index: NDArray[np.int64],
    out_value: FloatArray,
    name_rank: NDArray[np.int64],
    calib: FloatArray,
    *args: Any,
) -> None:
    scratch = np.empty(name_rank.shape[0])
    for i in range(matrix.shape[0]):
        scratch[:] = 0.0
        proba[i] = _calibrate(_linear_row(matrix[i], scratch, *args), calib)
        _row_top_k(scratch, name_rank, out_index[i], out_value[i])


@_kernel(parallel=True)
def _linear_batch(
    matrix: FloatArray, proba: FloatArray, contrib: FloatArray, calib: FloatArray, *args: Any
) -> None:
    for i in numba.prange(matrix.shape[0]):
        proba[i] = _calibrate(_linear_row(matrix[i], contrib[i], *args), calib)


@_kernel()
def _top_k(values: FloatArray, rank: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    chosen = np.empty(k, np.int64)
    taken = np.zeros(values.shape[0], np.bool_)
    for slot in range(k):
        best, top = -1, -1.0
        for r in range(values.shape[0]):
            size = abs(values[r])
            if not taken[r] and (best < 0 or size > top or (size == top and rank[r] < rank[best])):
                best, top = r, size
        taken[best] = True
        chosen[slot] = best
    return chosen


_KERNELS: dict[str, tuple[Callable[..., float], Callable[..., None], Callable[..., None]]] = {
    "forest": (_forest_one, _forest_batch, _forest_reasons),
    "linear": (_linear_one, _linear_batch, _linear_reasons),
    "blend": (_blend_one, _blend_batch, _blend_reasons),
}


class FastModel:
    """Probability + raw-feature contributions from a fitted Classifier, without pandas or its predict.

    Probabilities are calibrated when the classifier is (a `CalibratedClassifier`: the map runs in
    the kernels). Contributions are in the uncalibrated log-odds: `bias + contributions.sum()` is
    the base model's raw margin; calibration is monotone, so it never reorders customers and the
    reasons keep their sign and order.
    """

    def __init__(
        self,
        kind: str,
        family: str,
        raw_features: Sequence[str],
        n_outputs: int,
        bias: float,
        args: tuple[Any, ...],
        calibration: Calibration = IDENTITY,
    ) -> None:
        self.kind = kind
        self.raw_features: tuple[str, ...] = tuple(raw_features)
        self.bias = bias
        self.calibration = calibration
        self._calib = calibration.kernel_args()
        self._family = family
        self._args = args
        self._row_shape = (n_outputs,)
        self._n_raw = len(self.raw_features)
        self._names = np.array(self.raw_features, dtype=object)
        self._name_order = np.argsort(self._names.astype(str), kind="stable").astype(np.int64)
        self._name_rank = np.argsort(self._name_order).astype(np.int64)
        self._one, self._batch, self._reasons = _KERNELS[family]

    @classmethod
    def build(
        cls, classifier: Classifier, output_sources: Sequence[tuple[str, ...]], raw_features: Sequence[str]
    ) -> FastModel:
        """Compile a fitted classifier; output column j is fed by the raw features `output_sources[j]`."""
        calibration = IDENTITY
        if isinstance(classifier, CalibratedClassifier):
            calibration = classifier.calibration
            classifier = classifier.base
        weights = _source_weights(output_sources, raw_features)
        n_outputs = len(output_sources)
        if isinstance(classifier, LinearClassifier):
            bias, args = _linear_args(classifier, weights)
            return cls(classifier.kind, "linear", raw_features, n_outputs, bias, args, calibration)
        if isinstance(classifier, BlendClassifier):
            bias, args = _blend_args(classifier, weights)
            return cls(classifier.kind, "blend", raw_features, n_outputs, bias, args, calibration)
        forest = _forest(classifier, weights)
        return cls(
            classifier.kind, "forest", raw_features, n_outputs, forest.bias, forest.args(), calibration
        )

    def score_one(self, row: FloatArray) -> tuple[float, FloatArray]:
        """Probability and per-raw-feature contributions for one transformed row (`transform_one`)."""
        if row.shape != self._row_shape:
            raise ValueError(f"row must have shape {self._row_shape}, got {row.shape}")
        out = np.zeros(self._n_raw)
        return self._one(row, out, self._calib, *self._args), out

    def score_batch(self, matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Probabilities (n,) and contributions (n, R) for a transformed matrix, in parallel over rows."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1:] != self._row_shape:
            raise ValueError(f"matrix must have shape (n, {self._row_shape[0]}), got {matrix.shape}")
        proba = np.empty(matrix.shape[0])
        contrib = np.zeros((matrix.shape[0], self._n_raw))
        self._batch(matrix, proba, contrib, self._calib, *self._args)
        return proba, contrib

    def score_reasons(
        self, matrix: FloatArray, k: int = 3
    ) -> tuple[FloatArray, NDArray[np.int64], FloatArray]:
        """Probabilities (n,), top-k reason indices into `raw_features` (n, k) and their contributions
        (n, k), on the calling thread only: for callers that spread row blocks over threads themselves
        (a parallel kernel waits for its slowest thread, so it stalls beside other busy threads)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1:] != self._row_shape:
            raise ValueError(f"matrix must have shape (n, {self._row_shape[0]}), got {matrix.shape}")
        k = self._cap(k)
        proba = np.empty(matrix.shape[0])
        index = np.empty((matrix.shape[0], k), dtype=np.int64)
        top = np.empty((matrix.shape[0], k), dtype=np.float64)
        self._reasons(matrix, proba, index, top, self._name_rank, self._calib, *self._args)
        return proba, index, top

    def top_reasons(self, contributions: FloatArray, k: int = 3) -> list[tuple[str, float]]:
        """The k raw features with the largest |contribution| (ties by name), with their contributions."""
        values = np.ascontiguousarray(contributions, dtype=np.float64)
        if values.shape != (self._n_raw,):
            raise ValueError(f"contributions must have shape ({self._n_raw},), got {values.shape}")
        chosen = _top_k(values, self._name_rank, self._cap(k)).tolist()
        return [(self.raw_features[i], float(values[i])) for i in chosen]

    def top_reasons_batch(
        self, contributions: FloatArray, k: int = 3
    ) -> tuple[NDArray[np.str_] | NDArray[np.object_], FloatArray]:
        """Names (n, k) and contributions (n, k) of each row's top reasons, as `top_reasons` orders them."""
        values = np.asarray(contributions, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self._n_raw:
            raise ValueError(f"contributions must have shape (n, {self._n_raw}), got {values.shape}")
        index, top = self.top_reason_codes(values, k)
        return self._names[index], top

    def top_reason_codes(self, contributions: FloatArray, k: int = 3) -> tuple[NDArray[np.int64], FloatArray]:
        """Like `top_reasons_batch` but with indices into `raw_features` (cheap categorical columns)."""
        values = np.ascontiguousarray(contributions, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self._n_raw:
            raise ValueError(f"contributions must have shape (n, {self._n_raw}), got {values.shape}")
        k = self._cap(k)
        index = np.empty((values.shape[0], k), dtype=np.int64)
        top = np.empty((values.shape[0], k), dtype=np.float64)
        _top_k_batch(values, self._name_rank, index, top)
        return index, top

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernels, so the first request pays nothing."""
        _, contributions = self.score_one(np.zeros(self._row_shape[0]))
        self.top_reasons(contributions)
        self.score_batch(np.zeros((2, self._row_shape[0])))

    def _cap(self, k: int) -> int:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return min(k, self._n_raw)

    def __getstate__(self) -> dict[str, Any]:
        return {
            key: value for key, value in self.__dict__.items() if key not in ("_one", "_batch", "_reasons")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_calib" not in state:  # pickled before calibration existed (model cache format 1)
            self.calibration, self._calib = IDENTITY, IDENTITY.kernel_args()
        self._one, self._batch, self._reasons = _KERNELS[self._family]


def _source_weights(output_sources: Sequence[tuple[str, ...]], raw_features: Sequence[str]) -> FloatArray:
    """(n_outputs, R): the share of each output column's contribution that goes to each raw feature."""
    position = {name: i for i, name in enumerate(raw_features)}
    if len(position) != len(raw_features):
        raise ValueError(f"raw feature names must be unique, got {list(raw_features)}")
    weights = np.zeros((len(output_sources), len(position)))
    for j, sources in enumerate(output_sources):
        unique = list(dict.fromkeys(sources))
        unknown = [s for s in unique if s not in position]
        if not unique or unknown:
            raise ValueError(f"output column {j}: sources {sources} are not all raw features")
        weights[j, [position[s] for s in unique]] = 1.0 / len(unique)
    return weights


def _forest(classifier: Classifier, weights: FloatArray) -> _Forest:
    if isinstance(classifier, LightGBMClassifier):
        return _lightgbm_forest(classifier, weights)
    if isinstance(classifier, XGBoostClassifier):
        return _xgboost_forest(classifier, weights)
    raise ValueError(f"FastModel cannot compile a classifier of kind {classifier.kind!r}")


def _blend_args(classifier: BlendClassifier, weights: FloatArray) -> tuple[float, tuple[Any, ...]]:
    """Both members with their blend weight folded in: the linear model's coefficients and intercept,
    the forest's base and leaf rows (value and attribution), so their margins simply add."""
    w_linear, w_tree = classifier.weights
    linear = classifier.linear
    scaled = dataclasses.replace(linear, coef=linear.coef * w_linear, intercept=linear.intercept * w_linear)
    linear_bias, linear_args = _linear_args(scaled, weights)
    forest = _forest(classifier.tree, weights)
    forest.leaves = [leaf * w_tree for leaf in forest.leaves]
    forest.base *= w_tree
    forest.bias *= w_tree
    return linear_bias + forest.bias, (linear_args, forest.args())


def _linear_args(classifier: LinearClassifier, weights: FloatArray) -> tuple[float, tuple[Any, ...]]:
    if classifier.coef.shape != (weights.shape[0],):
        raise ValueError(
            f"classifier has {classifier.coef.shape[0]} coefficients, expected {weights.shape[0]}"
        )
    rows, raw_index = np.nonzero(weights)
    ptr = np.zeros(weights.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=weights.shape[0]), out=ptr[1:])
    arrays = (classifier.mean, classifier.scale, classifier.coef)
    mean, std, coef = (np.ascontiguousarray(a, dtype=np.float64) for a in arrays)
    args = (
        mean,
        std,
        coef,
        ptr,
        raw_index.astype(np.int64),
        weights[rows, raw_index],
        float(classifier.intercept),
    )
    return float(classifier.intercept), args


@dataclass
class _Tree:
    """One tree with local node ids (root 0); a leaf has left == right == -1."""

    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)  # leaf value, or the node's value for attribution

    def add(self, feature: int = -1, threshold: float = 0.0, flags: int = 0, value: float = 0.0) -> int:
        self.feature.append(feature)
        self.threshold.append(threshold)
        self.flags.append(flags)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(value)
        return len(self.value) - 1


@dataclass
class _Forest:
    """All trees as flat arrays: internal nodes first, then one self-looping node per leaf."""

    n_raw: int
    snap: bool  # LightGBM reads |x| <= kZeroThreshold as 0; XGBoost does not
    base: float = 0.0  # margin before any tree (XGBoost's base score)
    scale: float = 1.0  # probability = sigmoid(scale * margin)
    bias: float = 0.0  # base + the sum of the root values
    exact_only: bool = False  # a missing_type Zero split sends 0 against its threshold
    nodes: list[tuple[int, int, int, int]] = field(default_factory=list)  # leaves as ~leaf until args()
    thresholds: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    leaves: list[FloatArray] = field(default_factory=list)  # leaf value, then its raw-feature attribution

    def append(self, tree: _Tree, weights: FloatArray) -> None:
        """Number the tree's nodes globally and precompute each leaf's value and attribution."""
        code: dict[int, int] = {}
        for local in range(len(tree.value)):
            if tree.left[local] < 0:
                code[local] = ~len(self.leaves)
                self.leaves.append(np.zeros(self.n_raw + 1))
            else:
                code[local] = len(self.nodes)
                self.nodes.append((0, 0, 0, 0))  # filled below, once every node has a code
                self.thresholds.append(tree.threshold[local])
                self.exact_only |= tree.flags[local] >> 1 == _ZERO_MISSING and (
                    bool(tree.flags[local] & 1) != (tree.threshold[local] >= 0.0)
                )
        for local, node in code.items():
            if node >= 0:
                left, right = code[tree.left[local]], code[tree.right[local]]
                self.nodes[node] = (tree.feature[local], left, right, tree.flags[local])
        self.roots.append(code[0])
        self.bias += tree.value[0]
        self.depths.append(self._attribute(tree, code, weights))

    def _attribute(self, tree: _Tree, code: dict[int, int], weights: FloatArray) -> int:
        """Fill each leaf's row (value, path attribution); return the tree's depth."""
        stack, depth = [(0, 0, np.zeros(self.n_raw))], 0
        while stack:
            local, level, path = stack.pop()
            if tree.left[local] < 0:
                self.leaves[~code[local]] = np.concatenate(([tree.value[local]], path))
                depth = max(depth, level)
                continue
            for child in (tree.left[local], tree.right[local]):
                gain = tree.value[child] - tree.value[local]
                stack.append((child, level + 1, path + gain * weights[tree.feature[local]]))
        return depth

    def args(self) -> tuple[Any, ...]:
        """Kernel arguments after `row, out(, scratch)`: see `_forest_row`."""
        n_internal = len(self.nodes)

        def final(node: int) -> int:
            return node if node >= 0 else n_internal + ~node

        nodes = np.array(
            [(f, final(a), final(b), flags) for f, a, b, flags in self.nodes]
            + [(0, n_internal + i, n_internal + i, 0) for i in range(len(self.leaves))],
            dtype=np.int32,
        ).reshape(-1, 4)
        thresholds = np.concatenate([np.array(self.thresholds), np.zeros(len(self.leaves))])
        depths = np.array(self.depths, dtype=np.int64)
        order = np.argsort(-depths, kind="stable")  # deepest first: the trees still walking are a prefix
        active = [int((depths > level).sum()) for level in range(int(depths.max(initial=0)))]
        roots = [final(self.roots[t]) for t in order]
        schedule = np.array([*roots, *np.argsort(order).tolist(), *active], dtype=np.int32)
        leaves = np.array(self.leaves, dtype=np.float64).reshape(-1, self.n_raw + 1)
        n_trees = len(self.roots)
        return (
            nodes,
            thresholds,
            schedule,
            leaves,
            n_trees,
            n_internal,
            self.snap,
            self.exact_only,
            self.base,
            self.scale,
        )


def _float32_less_as_le(threshold: float) -> float:
    """The double q such that float32(x) < threshold exactly when x <= q (round to nearest even).

    XGBoost compares float32(x) < t; between float32 t's predecessor p and t, doubles below the
    midpoint round to p, above it to t, and the midpoint itself to whichever has an even mantissa.
    """
    t = np.float32(threshold)
    if not np.isfinite(t):
        raise ValueError(f"unsupported XGBoost split threshold {threshold}")
    p = np.nextafter(t, np.float32(-np.inf))
    below = float(p) if np.isfinite(p) else -(2.0**128)  # rounding past -max gives -inf, "even"
    midpoint = (below + float(t)) / 2.0  # exact: two adjacent float32 values
    p_is_even = not np.isfinite(p) or int(p.view(np.uint32)) & 1 == 0
    return midpoint if p_is_even else float(np.nextafter(midpoint, -np.inf))


def _lightgbm_forest(classifier: LightGBMClassifier, weights: FloatArray) -> _Forest:
    dump = classifier.booster.dump_model(num_iteration=classifier.best_iteration)
    objective = str(dump.get("objective", ""))
    if not objective.startswith("binary") or dump.get("num_tree_per_iteration", 1) != 1:
        raise ValueError(f"FastModel needs a binary LightGBM model, got objective {objective!r}")
    if dump.get("average_output"):
        raise ValueError("FastModel does not support LightGBM random-forest (averaged) models")
    if dump["max_feature_idx"] + 1 != weights.shape[0]:
        raise ValueError(f"booster has {dump['max_feature_idx'] + 1} features, expected {weights.shape[0]}")
    sigmoid = [float(p.split(":")[1]) for p in objective.split() if p.startswith("sigmoid:")]
    forest = _Forest(weights.shape[1], snap=True, scale=sigmoid[0] if sigmoid else 1.0)
    for info in dump["tree_info"]:
        forest.append(_lightgbm_tree(info["tree_structure"]), weights)
    return forest


def _lightgbm_tree(structure: Mapping[str, Any]) -> _Tree:
    tree = _Tree()
    stack: list[tuple[Mapping[str, Any], int, bool]] = [(structure, -1, False)]
    while stack:
        node, parent, is_left = stack.pop()
        if "split_index" in node:
            if node["decision_type"] != "<=":
                raise ValueError(f"unsupported LightGBM split {node['decision_type']!r} (categorical split)")
            flags = int(bool(node["default_left"])) | _MISSING_TYPES[node["missing_type"]] << 1
            index = tree.add(
                int(node["split_feature"]), float(node["threshold"]), flags, float(node["internal_value"])
            )
            stack += [(node["right_child"], index, False), (node["left_child"], index, True)]
        else:
            if "leaf_coeff" in node:
                raise ValueError("unsupported LightGBM linear tree")
            index = tree.add(value=float(node["leaf_value"]))
        if parent >= 0:
            (tree.left if is_left else tree.right)[parent] = index
    return tree


def _xgboost_forest(classifier: XGBoostClassifier, weights: FloatArray) -> _Forest:
    learner = json.loads(bytes(classifier.booster.save_raw(raw_format="json")))["learner"]
    objective = learner["objective"]["name"]
    if (
        objective not in ("binary:logistic", "reg:logistic")
        or learner["gradient_booster"]["name"] != "gbtree"
    ):
        raise ValueError(f"FastModel needs a gbtree binary:logistic XGBoost model, got {objective!r}")
    model = learner["gradient_booster"]["model"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    if n_features != weights.shape[0]:
        raise ValueError(f"booster has {n_features} features, expected {weights.shape[0]}")
    base_score = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
    base = math.log(base_score / (1.0 - base_score))
    indptr = model.get("iteration_indptr") or list(range(len(model["trees"]) + 1))
    forest = _Forest(weights.shape[1], snap=False, base=base, bias=base)
    for raw_tree in model["trees"][: indptr[classifier.best_iteration]]:
        forest.append(_xgboost_tree(raw_tree), weights)
    return forest


def _xgboost_tree(raw: Mapping[str, Any]) -> _Tree:
    """Reachable nodes in pre-order; an internal node's value is the cover-weighted mean of its children's."""
    left, right, cover = raw["left_children"], raw["right_children"], raw["sum_hessian"]
    if any(raw["split_type"]):
        raise ValueError("unsupported XGBoost categorical split")
    tree, local, order = _Tree(), {}, [0]
    for node in order:  # grows while iterating: a breadth-first listing of reachable nodes
        if left[node] >= 0:
            order += [left[node], right[node]]
    for node in order:
        flags = int(bool(raw["default_left"][node])) | _NAN_MISSING << 1
        value = float(np.float32(raw["split_conditions"][node]))  # a leaf's value, or a split's threshold
        threshold = _float32_less_as_le(value) if left[node] >= 0 else 0.0
        local[node] = tree.add(int(raw["split_indices"][node]), threshold, flags, value)
    for node in reversed(order):  # children after parents in `order`: fill values bottom-up
        if left[node] >= 0:
            i, a, b = local[node], left[node], right[node]
            tree.left[i], tree.right[i] = local[a], local[b]
            total = cover[a] + cover[b]
            va, vb = tree.value[local[a]], tree.value[local[b]]
            tree.value[i] = (cover[a] * va + cover[b] * vb) / total if total > 0 else (va + vb) / 2
    return tree

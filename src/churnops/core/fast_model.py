"""FastModel: churn probability and raw-feature reason codes without pandas or the library's predict.

A fitted classifier is compiled once into flat numpy arrays and scored by numba kernels.
Reason codes are path attributions (Saabas, as in treeinterpreter): along a row's decision
path, each split's feature gets value(child) - value(parent), so that bias (the sum of the
root values) plus the contributions is exactly the raw margin. They are precomputed per
(tree, leaf) and already aggregated from the transformer's output columns onto the spec's
raw features (an output fed by several raw features, such as a cross, is split equally),
so scoring a row is: walk each tree to its leaf, add the leaf's margin and raw-feature vector.

The arrays the kernels walk are built in `core/fast_layout.py` (forest layout described
there): rows without missing values step all trees level by level without branches; rows
with NaN (or LightGBM's near-zero values) take the exact per-node rule of the engine.

A calibrated classifier's map (`core.calibration`) is applied to the probability in the same
kernels (`_calibrate`); the contributions stay in the uncalibrated log-odds.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from churnops.core.blend import BlendClassifier
from churnops.core.calibration import EPS as _CAL_EPS
from churnops.core.calibration import IDENTITY, CalibratedClassifier, Calibration
from churnops.core.candidates import Classifier, LinearClassifier
from churnops.core.fast_layout import (
    _NAN_MISSING,
    _ZERO,
    _ZERO_MISSING,
    _blend_args,
    _forest,
    _linear_args,
    _source_weights,
)

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
F = TypeVar("F", bound=Callable[..., Any])

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

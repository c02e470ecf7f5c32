"""FastModel: churn probability and raw-feature reason codes without pandas or the library's predict.

A fitted classifier is compiled once into flat numpy arrays and scored by numba kernels.
Reason codes are path attributions (Saabas, as in treeinterpreter): along a row's decision
path, each split's feature gets value(child) - value(parent), so that bias (the sum of the
root values) plus the contributions is exactly the raw margin. They are precomputed per
(tree, leaf) and already aggregated from the transformer's output columns onto the spec's
raw features (an output fed by several raw features, such as a cross, is split equally),
so scoring a row is: walk each tree to its leaf, add the leaf's margin and raw-feature vector.

Tree layout, over all nodes of all trees: `nodes[i] = (feature, left, right, flags)`
(int32), `thresholds[i]` (float64); a child < 0 is the leaf `-child - 1`; flags bit 0 is
default-left and bits 1-2 LightGBM's missing type. Each engine's own decision rule is
reproduced: LightGBM compares doubles (`x <= threshold`), XGBoost float32 (`x < threshold`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from churnops.core.candidates import Classifier, LightGBMClassifier, LinearClassifier, XGBoostClassifier

FloatArray = NDArray[np.float64]
F = TypeVar("F", bound=Callable[..., Any])

_LIGHTGBM, _XGBOOST = 0, 1  # decision rule of the forest kernels
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
# LightGBM's kZeroThreshold (a float literal held in a double): values this close to 0 are
# left out of its sparse rows, i.e. read as 0, and count as missing under missing_type Zero.
_ZERO = float(np.float32(1e-35))


def _kernel(parallel: bool = False) -> Callable[[F], F]:
    # numba only warns when it cannot write its cache (read-only install); NUMBA_CACHE_DIR is honoured.
    return cast(Callable[[F], F], numba.njit(cache=True, nogil=True, parallel=parallel))


@_kernel()
def _goes_left(x: float, threshold: float, flags: int, mode: int) -> bool:
    default_left = (flags & 1) != 0
    if mode == _XGBOOST:
        if math.isnan(x):
            return default_left
        return bool(np.float32(x) < threshold)  # threshold holds a float32 value
    missing = flags >> 1
    if math.isnan(x):
        if missing == 2:
            return default_left
        x = 0.0
    if abs(x) <= _ZERO:
        if missing == 1:
            return default_left
        x = 0.0
    return x <= threshold


@_kernel()
def _forest_row(
    row: FloatArray,
    out: FloatArray,
    nodes: NDArray[np.int32],
    thresholds: FloatArray,
    roots: NDArray[np.int32],
    leaf_values: FloatArray,
    leaf_contrib: FloatArray,
    mode: int,
    base: float,
    scale: float,
) -> float:
    margin = base
    for tree in range(roots.shape[0]):
        node = roots[tree]
        while node >= 0:
            left = _goes_left(row[nodes[node, 0]], thresholds[node], nodes[node, 3], mode)
            node = nodes[node, 1] if left else nodes[node, 2]
        leaf = -node - 1
        margin += leaf_values[leaf]
        for r in range(out.shape[0]):
            out[r] += leaf_contrib[leaf, r]
    return 1.0 / (1.0 + math.exp(-scale * margin))


@_kernel()
def _linear_row(
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
    return 1.0 / (1.0 + math.exp(-margin))


@_kernel(parallel=True)
def _forest_batch(matrix: FloatArray, proba: FloatArray, contrib: FloatArray, *args: Any) -> None:
    for i in numba.prange(matrix.shape[0]):
        proba[i] = _forest_row(matrix[i], contrib[i], *args)


@_kernel(parallel=True)
def _linear_batch(matrix: FloatArray, proba: FloatArray, contrib: FloatArray, *args: Any) -> None:
    for i in numba.prange(matrix.shape[0]):
        proba[i] = _linear_row(matrix[i], contrib[i], *args)


@_kernel()
def _top_k(values: FloatArray, rank: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    chosen = np.empty(k, np.int64)
    taken = np.zeros(values.shape[0], np.bool_)
    for slot in range(k):
        best = -1
        for r in range(values.shape[0]):
            if taken[r]:
                continue
            if best < 0 or abs(values[r]) > abs(values[best]):
                best = r
            elif abs(values[r]) == abs(values[best]) and rank[r] < rank[best]:
                best = r
        taken[best] = True
        chosen[slot] = best
    return chosen


_KERNELS: dict[str, tuple[Callable[..., float], Callable[..., None]]] = {
    "forest": (_forest_row, _forest_batch),
    "linear": (_linear_row, _linear_batch),
}


class FastModel:
    """Probability + raw-feature contributions from a fitted Classifier, without pandas or the library's predict.

    Contributions are in log-odds; `bias + contributions.sum()` is the model's raw margin.
    """

    def __init__(
        self,
        kind: str,
        family: str,
        raw_features: Sequence[str],
        n_outputs: int,
        bias: float,
        args: tuple[Any, ...],
    ) -> None:
        self.kind = kind
        self.raw_features: tuple[str, ...] = tuple(raw_features)
        self.bias = bias
        self._family = family
        self._args = args
        self._row_shape = (n_outputs,)
        self._n_raw = len(self.raw_features)
        self._names = np.array(self.raw_features, dtype=object)
        self._name_order = np.argsort(self._names.astype(str), kind="stable").astype(np.int64)
        self._name_rank = np.argsort(self._name_order).astype(np.int64)
        self._one, self._batch = _KERNELS[family]

    @classmethod
    def build(
        cls, classifier: Classifier, output_sources: Sequence[tuple[str, ...]], raw_features: Sequence[str]
    ) -> FastModel:
        """Compile a fitted classifier; output column j is fed by the raw features `output_sources[j]`."""
        weights = _source_weights(output_sources, raw_features)
        if isinstance(classifier, LinearClassifier):
            return cls(
                classifier.kind,
                "linear",
                raw_features,
                len(output_sources),
                *_linear_args(classifier, weights),
            )
        if isinstance(classifier, LightGBMClassifier):
            forest = _lightgbm_forest(classifier, weights)
        elif isinstance(classifier, XGBoostClassifier):
            forest = _xgboost_forest(classifier, weights)
        else:
            raise ValueError(f"FastModel cannot compile a classifier of kind {classifier.kind!r}")
        return cls(classifier.kind, "forest", raw_features, len(output_sources), forest.bias, forest.args())

    def score_one(self, row: FloatArray) -> tuple[float, FloatArray]:
        """Probability and per-raw-feature contributions for one transformed row (`transform_one`)."""
        if row.shape != self._row_shape:
            raise ValueError(f"row must have shape {self._row_shape}, got {row.shape}")
        out = np.zeros(self._n_raw)
        return self._one(row, out, *self._args), out

    def score_batch(self, matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Probabilities (n,) and contributions (n, R) for a transformed matrix, in parallel over rows."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1:] != self._row_shape:
            raise ValueError(f"matrix must have shape (n, {self._row_shape[0]}), got {matrix.shape}")
        proba = np.empty(matrix.shape[0])
        contrib = np.zeros((matrix.shape[0], self._n_raw))
        self._batch(matrix, proba, contrib, *self._args)
        return proba, contrib

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
        k = self._cap(k)
        magnitude = np.abs(values[:, self._name_order])  # columns by name: ties go to the lower column
        columns = _top_columns(magnitude, k)
        order = np.argsort(-np.take_along_axis(magnitude, columns, axis=1), axis=1, kind="stable")
        raw = self._name_order[np.take_along_axis(columns, order, axis=1)]
        return self._names[raw], np.take_along_axis(values, raw, axis=1)

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
        return {key: value for key, value in self.__dict__.items() if key not in ("_one", "_batch")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._one, self._batch = _KERNELS[self._family]


def _top_columns(magnitude: FloatArray, k: int) -> NDArray[np.intp]:
    """Per row, the columns of the k largest values (lowest column on ties), in column order."""
    rows, width = magnitude.shape
    if k >= width:
        return np.broadcast_to(np.arange(width), (rows, width))
    columns = np.sort(np.argpartition(-magnitude, k - 1, axis=1)[:, :k], axis=1)
    kth = np.take_along_axis(magnitude, columns, axis=1).min(axis=1)
    # argpartition breaks ties at the k-th place arbitrarily: redo those rows with a stable sort.
    tied = np.flatnonzero((magnitude >= kth[:, None]).sum(axis=1) > k)
    if tied.size:
        exact = np.argsort(-magnitude[tied], axis=1, kind="stable")[:, :k]
        columns[tied] = np.sort(exact, axis=1)
    return columns


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
        for column, item in zip(
            (self.feature, self.threshold, self.flags, self.left, self.right, self.value),
            (feature, threshold, flags, -1, -1, value),
            strict=True,
        ):
            column.append(item)
        return len(self.value) - 1


@dataclass
class _Forest:
    """Flat arrays over all trees, ready for the kernels."""

    nodes: list[tuple[int, int, int, int]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    leaf_values: list[float] = field(default_factory=list)
    leaf_contrib: list[FloatArray] = field(default_factory=list)
    mode: int = _LIGHTGBM
    base: float = 0.0  # margin before any tree (XGBoost's base score)
    scale: float = 1.0  # probability = sigmoid(scale * margin)
    bias: float = 0.0  # base + the sum of the root values

    def append(self, tree: _Tree, weights: FloatArray) -> None:
        """Number the tree's internal nodes and leaves globally and precompute each leaf's attribution."""
        code: dict[int, int] = {}
        for local in range(len(tree.value)):
            if tree.left[local] < 0:
                code[local] = -len(self.leaf_values) - 1
                self.leaf_values.append(tree.value[local])
                self.leaf_contrib.append(np.zeros(weights.shape[1]))
            else:
                code[local] = len(self.nodes)
                self.nodes.append((0, 0, 0, 0))  # filled below, once children have codes
                self.thresholds.append(tree.threshold[local])
        for local, node in code.items():
            if node >= 0:
                self.nodes[node] = (
                    tree.feature[local],
                    code[tree.left[local]],
                    code[tree.right[local]],
                    tree.flags[local],
                )
        self.roots.append(code[0])
        self.bias += tree.value[0]
        stack = [(0, np.zeros(weights.shape[1]))]
        while stack:
            local, path = stack.pop()
            if tree.left[local] < 0:
                self.leaf_contrib[-code[local] - 1] = path
                continue
            for child in (tree.left[local], tree.right[local]):
                gain = tree.value[child] - tree.value[local]
                stack.append((child, path + gain * weights[tree.feature[local]]))

    def args(self) -> tuple[Any, ...]:
        n_raw = self.leaf_contrib[0].shape[0] if self.leaf_contrib else 0
        return (
            np.array(self.nodes, dtype=np.int32).reshape(-1, 4),
            np.array(self.thresholds, dtype=np.float64),
            np.array(self.roots, dtype=np.int32),
            np.array(self.leaf_values, dtype=np.float64),
            np.array(self.leaf_contrib, dtype=np.float64).reshape(-1, n_raw),
            self.mode,
            self.base,
            self.scale,
        )


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
    forest = _Forest(mode=_LIGHTGBM, scale=sigmoid[0] if sigmoid else 1.0)
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
    forest = _Forest(mode=_XGBOOST, base=base, bias=base)
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
        flags = int(bool(raw["default_left"][node]))
        threshold = float(np.float32(raw["split_conditions"][node]))
        local[node] = tree.add(int(raw["split_indices"][node]), threshold, flags, threshold)
    for node in reversed(order):  # children after parents in `order`: fill values bottom-up
        if left[node] >= 0:
            i, a, b = local[node], left[node], right[node]
            tree.left[i], tree.right[i] = local[a], local[b]
            total = cover[a] + cover[b]
            va, vb = tree.value[local[a]], tree.value[local[b]]
            tree.value[i] = (cover[a] * va + cover[b] * vb) / total if total > 0 else (va + vb) / 2
    return tree

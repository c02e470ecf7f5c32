"""FastModel's arrays: a fitted classifier compiled into the flat numpy arrays its kernels walk.

Forest layout (`_Forest.args`): `nodes[i] = (feature, left, right, flags)` int32 and
`thresholds[i]` float64 over the internal nodes of all trees, then one node per leaf that
points to itself; flags bit 0 is default-left, bits 1-2 the missing type. Every split
reads "go left when x <= threshold": XGBoost's float32 test `float32(x) < t` is turned into
the equivalent double threshold at build time. `leaves[l] = (value, contribution per raw
feature)`: the leaf's path attribution is precomputed, already summed onto the spec's raw
features. `schedule` holds the roots (deepest tree first), each tree's position in that
order and how many trees are still walking at each depth.

Linear models become (mean, std, coef, a sparse output -> raw-feature map, intercept); a blend
is both, each with its weight folded in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from churnops.core.blend import BlendClassifier
from churnops.core.candidates import Classifier, LightGBMClassifier, LinearClassifier, XGBoostClassifier

FloatArray = NDArray[np.float64]

_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
_ZERO_MISSING, _NAN_MISSING = 1, 2
# LightGBM's kZeroThreshold (a float literal held in a double): values this close to 0 are
# left out of its sparse rows, i.e. read as 0, and count as missing under missing_type Zero.
_ZERO = float(np.float32(1e-35))


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

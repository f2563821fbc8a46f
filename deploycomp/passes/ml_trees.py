"""ONNX-ML tree ensembles as core ops: comparisons and matrix products.

``TreeEnsembleRegressor`` and ``TreeEnsembleClassifier`` (scikit-learn's forests and
gradient boosting through skl2onnx, LightGBM and XGBoost through onnxmltools), and
``ai.onnx.ml`` opset 5's ``TreeEnsemble`` that replaces them (read into their layout),
are the ONNX files of most tabular models, and no backend here runs ``ai.onnx.ml``. A tree is a
walk, but the walk's outcome is arithmetic: every split's decision computed at once, the
leaf the one whose path agrees with all of them. Per tree, with its internal nodes as
rows and its leaves as columns (padded to the ensemble's largest tree):

* ``decisions``: each internal node's comparison of its feature (a ``Gather`` of the
  input's columns) with its threshold, as 1.0 (go to the true child) or 0.0; a NaN
  goes to the true child where ``nodes_missing_value_tracks_true`` says so (LightGBM's
  missing values), as ONNX Runtime's walk sends it;
* ``paths``: +1 where a leaf lies under the node's true child, -1 under its false child;
* ``decisions @ paths`` is at most ``depth_true`` (how many +1 a leaf's path holds), and
  equal exactly when every decision on the path goes the leaf's way: a leaf is reached
  where ``decisions @ paths > depth_true - 0.5`` (half a step of margin, so that int8
  arithmetic on the product still finds the same leaf);
* the reached leaves (1.0 / 0.0, every tree side by side) times the leaves' values per
  target or class, summed over trees, plus ``base_values``; ``AVERAGE`` divides by the
  number of trees.

A regressor's ``LOGISTIC`` or ``SOFTMAX`` applies where it has several targets: ONNX
Runtime leaves a single target's sum untransformed, and so does this.

Small integers in float32 are exact, so the leaves reached are those ONNX Runtime's walk
reaches on the same float32 inputs and thresholds. Then, as ONNX Runtime computes them:
a classifier's label is the class of the highest score (``ArgMax``, the first of ties),
its scores go through ``LOGISTIC`` or ``SOFTMAX``; a binary classifier written with one
score column (skl2onnx's forests and boosting) gives ``[1 - s, s]`` (``[-s, s]`` where
some leaf weight is negative) and label 1 where ``s > 0.5`` (``s > 0`` then), and with
``LOGISTIC`` ``[1 - sigmoid(s), sigmoid(s)]``.

Left as they are (a backend then refuses them by name): ``MIN``/``MAX`` aggregation,
``PROBIT`` and ``SOFTMAX_ZERO``, string labels read inside the graph (a label that is only
an output arrives as its position: :mod:`deploycomp.passes.ml_labels`), inputs that are not
``[N, features]``, ensembles whose padded tree tables would exceed :data:`MAX_TABLE_VALUES`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Callable

import numpy as np
import onnx_ir as ir

from deploycomp.ir import LEFT_BECAUSE, ROLE
from deploycomp.passes.ml_nodes import Emitter

__all__ = ["MAX_TABLE_VALUES", "tree_ensemble"]

MAX_TABLE_VALUES = 1 << 24
"""At most this many values in the padded tables (trees x internal nodes x leaves): 64 MB
of float32. A forest of 500 trees of depth 10 would need 500 x 1023 x 1024 and is left to
a runtime that walks it."""

_COMPARISONS = {"BRANCH_LEQ": "LessOrEqual", "BRANCH_LT": "Less", "BRANCH_GTE": "GreaterOrEqual",
                "BRANCH_GT": "Greater", "BRANCH_EQ": "Equal", "BRANCH_NEQ": "Equal"}


def _values(node: ir.Node, name: str, default=None) -> list | None:
    """An attribute's list, from its ``<name>_as_tensor`` form where that is the one given."""
    attr = node.attributes.get(name)
    if attr is not None:
        value = attr.value
        return [v.decode() if isinstance(v, bytes) else v for v in value] if isinstance(value, (list, tuple)) else value
    tensor = node.attributes.get(f"{name}_as_tensor")
    if tensor is not None:
        return tensor.as_tensor().numpy().astype(np.float64).reshape(-1).tolist()
    return default


_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "BRANCH_MEMBER")
_AGGREGATES = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
_POSTS = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}


def _getter(node: ir.Node) -> Callable[..., list | None] | None:
    """``get(name, default=None)`` reading ``node``'s attributes in the layout of
    ``TreeEnsembleRegressor``/``Classifier``; None where the node cannot be read so."""
    if node.op_type != "TreeEnsemble":
        return lambda name, default=None: _values(node, name, default)
    legacy = _unified(node)
    return None if legacy is None else (lambda name, default=None: legacy.get(name, default))


def _unified(node: ir.Node) -> dict | None:
    """ai.onnx.ml opset 5's ``TreeEnsemble`` (nodes indexed from each tree's root, a child
    either a node or a leaf, one target and weight per leaf) in the older ops' layout:
    each tree walked from its root, its nodes and leaves numbered in the tree. None for
    set membership (``BRANCH_MEMBER``) splits."""
    def ints(name: str) -> list[int] | None:
        attr = node.attributes.get(name)
        return None if attr is None else list(attr.as_ints())

    def array(name: str) -> np.ndarray | None:
        attr = node.attributes.get(name)
        return None if attr is None else attr.as_tensor().numpy().reshape(-1)

    modes, splits, weights = array("nodes_modes"), array("nodes_splits"), array("leaf_weights")
    features, trues, falses = ints("nodes_featureids"), ints("nodes_truenodeids"), ints("nodes_falsenodeids")
    true_leaf, false_leaf, roots, targets = (ints("nodes_trueleafs"), ints("nodes_falseleafs"), ints("tree_roots"),
                                             ints("leaf_targetids"))
    if any(v is None for v in (modes, splits, weights, features, trues, falses, true_leaf, false_leaf, roots, targets)):
        return None
    if any(int(m) >= len(_MODES) - 1 for m in modes):
        return None  # set membership (or a mode this file does not know)
    missing = ints("nodes_missing_value_tracks_true") or [0] * len(modes)
    out: dict[str, list] = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                                            "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                                            "nodes_missing_value_tracks_true", "target_treeids", "target_nodeids",
                                            "target_ids", "target_weights")}
    for tree, root in enumerate(roots):
        ids = itertools.count()  # each node's and leaf's id in its tree, as it is reached
        stack = [(root, False, next(ids))]  # (index, is a leaf, its id in the tree)
        while stack:
            index, leaf, own = stack.pop()
            if not 0 <= index < (len(weights) if leaf else len(modes)) or own > len(modes) + len(weights):
                return None  # an index out of range, or a cycle
            out["nodes_treeids"].append(tree)
            out["nodes_nodeids"].append(own)
            out["nodes_missing_value_tracks_true"].append(0 if leaf else int(missing[index]))
            if leaf:
                out["nodes_featureids"].append(0)
                out["nodes_values"].append(0.0)
                out["nodes_modes"].append("LEAF")
                out["nodes_truenodeids"].append(0)
                out["nodes_falsenodeids"].append(0)
                for key, value in (("target_treeids", tree), ("target_nodeids", own),
                                   ("target_ids", targets[index]), ("target_weights", float(weights[index]))):
                    out[key].append(value)
                continue
            true_id, false_id = next(ids), next(ids)
            out["nodes_featureids"].append(features[index])
            out["nodes_values"].append(float(splits[index]))
            out["nodes_modes"].append(_MODES[int(modes[index])])
            out["nodes_truenodeids"].append(true_id)
            out["nodes_falsenodeids"].append(false_id)
            stack.append((trues[index], bool(true_leaf[index]), true_id))
            stack.append((falses[index], bool(false_leaf[index]), false_id))
    post, aggregate = node.attributes.get("post_transform"), node.attributes.get("aggregate_function")
    out["post_transform"] = _POSTS.get(post.as_int() if post is not None else 0, "?")
    out["aggregate_function"] = _AGGREGATES.get(aggregate.as_int() if aggregate is not None else 1, "?")
    n_targets = node.attributes.get("n_targets")
    out["n_targets"] = n_targets.as_int() if n_targets is not None else 1
    return out


class _NotExpressed(Exception):
    """Something the tables do not express: the node stays as it is (refused by name, and
    with the reason where it has one)."""


def _require(condition: bool, reason: str = "") -> None:
    if not condition:
        raise _NotExpressed(reason)


class _Trees:
    """One ensemble's trees as padded tables (see the module docstring); :meth:`of` gives
    None where they cannot hold it."""

    @classmethod
    def of(cls, get: Callable[..., list | None], prefix: str, node: ir.Node | None = None) -> "_Trees | None":
        """``node``: where a reason to leave it is written (:data:`deploycomp.ir.LEFT_BECAUSE`)."""
        try:
            return cls(get, prefix)
        except _NotExpressed as e:
            if node is not None and str(e):
                node.metadata_props[LEFT_BECAUSE] = str(e)
            return None

    def __init__(self, get: Callable[..., list | None], prefix: str):
        """``get(name, default=None)``: an attribute of the legacy ops' layout (:func:`_getter`)."""
        tree_ids, node_ids = get("nodes_treeids"), get("nodes_nodeids")
        _require(bool(tree_ids) and len(tree_ids) == len(node_ids))
        modes, true_ids, false_ids = get("nodes_modes"), get("nodes_truenodeids"), get("nodes_falsenodeids")
        # the tables' size first, counted in numpy: walking a LightGBM model of 9988 trees
        # (4.8M nodes) in Python took 11 s before it was refused for that size
        _, tree_of = np.unique(np.asarray(tree_ids), return_inverse=True)
        is_leaf = np.asarray(modes) == "LEAF"
        width_l = int(np.bincount(tree_of, weights=is_leaf).max())
        width_i = int(np.bincount(tree_of, weights=~is_leaf).max())
        n_trees = int(tree_of.max()) + 1
        size = n_trees * max(width_i, 1) * width_l
        _require(width_l > 0 and size <= MAX_TABLE_VALUES,
                 f"its {n_trees} trees, padded to {width_i} splits and {width_l} leaves each, would take "
                 f"{size:,} table values to compute as matrix products (at most {MAX_TABLE_VALUES:,})")
        index = {(t, n): i for i, (t, n) in enumerate(zip(tree_ids, node_ids))}
        self.trees = list(dict.fromkeys(tree_ids))
        internal: dict[int, list[int]] = defaultdict(list)
        leaves: dict[int, list[int]] = defaultdict(list)
        children: dict[int, set[int]] = defaultdict(set)
        for i, (t, mode) in enumerate(zip(tree_ids, modes)):
            _require(mode == "LEAF" or mode in _COMPARISONS)
            if mode == "LEAF":
                leaves[t].append(i)
            else:
                internal[t].append(i)
                children[t] |= {index.get((t, true_ids[i]), -1), index.get((t, false_ids[i]), -1)}
        _require(not any(-1 in c for c in children.values()))
        shape_i, shape_l = (len(self.trees), max(width_i, 1)), (len(self.trees), width_l)
        self.features = np.zeros(shape_i, np.int64)
        self.thresholds = np.zeros(shape_i, np.float32)
        self.modes = np.full(shape_i, "", object)
        self.nan_true = np.zeros(shape_i, bool)  # a NaN input goes to the true child (LightGBM's default_left)
        self.paths = np.zeros((len(self.trees), shape_i[1], width_l), np.float32)
        self.depth_true = np.ones(shape_l, np.float32)  # a padded leaf is never reached
        self.leaf_slot: dict[int, tuple[int, int]] = {}  # node index -> (tree, leaf column)
        features, thresholds = get("nodes_featureids"), get("nodes_values")
        missing = get("nodes_missing_value_tracks_true", [0] * len(tree_ids))
        for k, t in enumerate(self.trees):
            rows = {i: r for r, i in enumerate(internal[t])}
            for i, r in rows.items():
                self.features[k, r], self.thresholds[k, r], self.modes[k, r] = features[i], thresholds[i], modes[i]
                self.nan_true[k, r] = bool(missing[i])
            roots = [i for i in (*internal[t], *leaves[t]) if i not in children[t]]
            _require(len(roots) == 1)
            self._walk(k, roots[0], rows, {i: c for c, i in enumerate(leaves[t])},
                       lambda i, t=t: (index[t, true_ids[i]], index[t, false_ids[i]]), len(tree_ids))
        self.index, self.width_l = index, width_l
        self._leaf_values(get, prefix)

    def _walk(self, k: int, root: int, rows: dict[int, int], cols: dict[int, int],
              children: Callable[[int], tuple[int, int]], most: int) -> None:
        """Tree ``k``'s path table: +1 where a leaf lies under a split's true child, -1
        under its false child; and how many true turns reach each leaf."""
        self.depth_true[k, :len(cols)] = 0.0
        stack = [(root, [])]  # (node, [(row, +1/-1)] on the way to it)
        while stack:
            i, path = stack.pop()
            if i in cols:
                for r, sign in path:
                    self.paths[k, r, cols[i]] = sign
                self.depth_true[k, cols[i]] = sum(1 for _, sign in path if sign > 0)
                self.leaf_slot[i] = (k, cols[i])
                continue
            _require(len(path) <= most)  # deeper than there are nodes: a cycle
            true_child, false_child = children(i)
            stack.append((true_child, path + [(rows[i], 1.0)]))
            stack.append((false_child, path + [(rows[i], -1.0)]))

    def _leaf_values(self, get: Callable[..., list | None], prefix: str) -> None:
        """(tree, leaf column) -> target -> the leaf's summed weight."""
        ids, weights = get(f"{prefix}_ids"), get(f"{prefix}_weights")
        leaf_trees, leaf_nodes = get(f"{prefix}_treeids"), get(f"{prefix}_nodeids")
        _require(bool(ids) and len(ids) == len(weights) == len(leaf_trees) == len(leaf_nodes))
        self.targets = max(ids) + 1
        self.values = np.zeros((len(self.trees), self.width_l, self.targets), np.float32)
        for target, w, t, n in zip(ids, weights, leaf_trees, leaf_nodes):
            slot = self.leaf_slot.get(self.index.get((t, n), -1))
            _require(slot is not None)
            self.values[slot[0], slot[1], target] += np.float32(w)
        self.all_positive = all(w >= 0 for w in weights)


WALK = "tree-walk"
"""The role (:data:`deploycomp.ir.ROLE`) of the nodes that walk an ensemble's trees: its
``MatMul``s count path agreements and sum the leaves reached, an exact procedure that
int8 makes inexact for no speed (a 100-tree IsolationForest's int8 build searched 193 s
to keep 125 of 200 of them float, its scores 11% off and 2.7x slower than ONNX Runtime)."""


def tree_ensemble(node: ir.Node, opset: int, const: Callable[[str, np.ndarray], ir.Value],
                  as_float: Callable[[], tuple[list[ir.Node], ir.Value]]) -> tuple[list[ir.Node], list[ir.Value]] | None:
    """Core-op nodes computing ``node`` (a ``TreeEnsembleRegressor`` or ``...Classifier``)
    and the values that replace its outputs; None where it stays as it is (see the module
    docstring). ``const(suffix, array)`` makes an initializer, ``as_float()`` the input as
    float32. The nodes have the :data:`WALK` role: an int8 build keeps them float."""
    written = _tree_ensemble(node, opset, const, as_float)
    for emitted in written[0] if written is not None else ():
        emitted.metadata_props[ROLE] = WALK
    return written


def _tree_ensemble(node: ir.Node, opset: int, const: Callable[[str, np.ndarray], ir.Value],
                   as_float: Callable[[], tuple[list[ir.Node], ir.Value]]) -> tuple[list[ir.Node], list[ir.Value]] | None:
    classifier = node.op_type == "TreeEnsembleClassifier"
    if opset < 13:  # written in opset 13 ops (a loaded model is at deploycomp.ir.MIN_OPSET or above)
        return None
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if shape is None or shape.rank() != 2:
        return None
    get = _getter(node)
    if get is None:
        return None
    post = get("post_transform", "NONE")
    aggregate = get("aggregate_function", "SUM")
    if post not in ("NONE", "LOGISTIC", "SOFTMAX") or aggregate not in ("SUM", "AVERAGE"):
        return None
    trees = _Trees.of(get, "class" if classifier else "target", node)
    if trees is None:
        return None
    labels = get("classlabels_int64s") if classifier else None
    if classifier and (not labels or get("classlabels_strings")):
        return None
    binary = classifier and len(labels) == 2 and trees.targets == 1
    if classifier and not binary and trees.targets != len(labels):
        return None
    if not classifier and (get("n_targets", 1) or 1) != trees.targets:
        return None
    base = get("base_values")
    if base is not None and len(base) != trees.targets:
        return None
    name = node.name or node.op_type
    nodes, x = as_float()

    add = Emitter(name, nodes)

    # each split's decision, 1.0 or 0.0: [N, trees, nodes]
    gathered = add("Gather", [x, const("features", trees.features)], "split_values", axis=1)
    thresholds = const("thresholds", trees.thresholds)
    decided = None
    for mode in sorted(set(trees.modes[trees.modes != ""]) or {"BRANCH_LEQ"}):
        cmp = add(_COMPARISONS[mode], [gathered, thresholds], mode.lower())
        if mode == "BRANCH_NEQ":
            cmp = add("Not", [cmp], "branch_neq_not")
        if len(set(trees.modes[trees.modes != ""])) > 1:
            cmp = add("And", [cmp, const(f"{mode.lower()}_rows", trees.modes == mode)], f"{mode.lower()}_rows")
        decided = cmp if decided is None else add("Or", [decided, cmp], f"{mode.lower()}_any")
    if trees.nan_true.any():  # as ONNX Runtime walks it: the comparison, or NaN where the split says so
        nan = add("And", [add("IsNaN", [gathered], "split_is_nan"), const("nan_true", trees.nan_true)], "nan_true")
        decided = add("Or", [decided, nan], "or_nan")
    decisions = add("Cast", [decided], "decisions", to=ir.DataType.FLOAT)
    def axes(op: str, value: ir.Value, axis: int, suffix: str) -> ir.Value:
        return add(op, [value, const(f"{suffix}_axis", np.asarray([axis], np.int64))], suffix)

    # the leaves reached: [N, trees, 1, nodes] @ [trees, nodes, leaves] -> [N, trees * leaves]
    rows = axes("Unsqueeze", decisions, 2, "decision_rows")
    agree = add("MatMul", [rows, const("paths", trees.paths)], "path_agreement")
    reached = add("Greater", [agree, const("depth_true", (trees.depth_true - 0.5)[:, None, :])], "reached")
    leaves = add("Cast", [reached], "leaves", to=ir.DataType.FLOAT)
    flat = add("Reshape", [leaves, const("flat", np.asarray([0, -1], np.int64))], "leaves_flat")
    values = trees.values.reshape(-1, trees.targets)
    if aggregate == "AVERAGE":
        values = values / np.float32(len(trees.trees))
    scores = add("MatMul", [flat, const("leaf_values", values)], "sums")
    if base is not None and any(base):
        scores = add("Add", [scores, const("base_values", np.asarray(base, np.float32))], "scores")
    if not classifier:
        # ONNX Runtime transforms a regressor's scores only where it has several targets:
        # one target's sum comes out as it is, LOGISTIC or SOFTMAX
        if post == "LOGISTIC" and trees.targets > 1:
            scores = add("Sigmoid", [scores], "logistic")
        elif post == "SOFTMAX" and trees.targets > 1:
            scores = add("Softmax", [scores], "softmax", axis=1)
        return nodes, [scores]
    if binary:
        # one column s: label 1 past the midpoint of the weights' range, two columns out
        positive = add("Greater", [scores, const("midpoint", np.asarray(0.5 if trees.all_positive else 0.0,
                                                                              np.float32))], "positive")
        index = add("Cast", [axes("Squeeze", positive, 1, "positive_row")], "label_index", to=ir.DataType.INT64)
        if post == "LOGISTIC":
            second = add("Sigmoid", [scores], "logistic")
            first = add("Sub", [const("one", np.asarray(1.0, np.float32)), second], "logistic_other")
        elif post == "NONE":
            second = scores
            first = (add("Sub", [const("one", np.asarray(1.0, np.float32)), scores], "other") if trees.all_positive
                     else add("Neg", [scores], "other"))
        else:
            return None
        out = add("Concat", [first, second], "binary_scores", axis=1)
    else:
        index = add("ArgMax", [scores], "argmax", axis=1, keepdims=0)
        out = (add("Sigmoid", [scores], "logistic") if post == "LOGISTIC" else
               add("Softmax", [scores], "softmax", axis=1) if post == "SOFTMAX" else scores)
    label = index
    if list(labels) != list(range(len(labels))):
        label = add("Gather", [const("classlabels", np.asarray(labels, np.int64)), index], "label", axis=0)
    return nodes, [label, out]

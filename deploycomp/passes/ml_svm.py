"""Support vector machines (``ai.onnx.ml`` ``SVMRegressor`` and ``SVMClassifier``) as
core ops, computed as ONNX Runtime computes them.

scikit-learn's SVR, NuSVR, OneClassSVM, SVC and NuSVC reach ONNX (skl2onnx) as these two
ops; no backend here runs ``ai.onnx.ml``. Both start from the kernel between each input
row and every support vector, ``K: [N, vectors]``:

- ``LINEAR``: ``x . sv``, folded into the weights that follow (``x . (sv^T w)``, in
  float64 when built); ``POLY``: ``(gamma x . sv + coef0) ** degree``; ``SIGMOID``:
  ``tanh(gamma x . sv + coef0)`` (one ``MatMul`` with the support vectors);
- ``RBF``: ``exp(-gamma |x - sv|^2)``, the squared distance summed from the differences
  (as ONNX Runtime does), not expanded into ``|x|^2 - 2 x . sv + |sv|^2``, which cancels
  where an input lies near a support vector.

A regressor is ``K @ coefficients + rho`` (``one_class``: its sign, +1 or -1). A
classifier's one-against-one decision for classes ``i < j`` sums class ``i``'s vectors
with the coefficients row ``j - 1`` and class ``j``'s with row ``i``, plus its ``rho``:
one ``MatMul`` with a ``[vectors, pairs]`` table. A decision above 0 is a vote for ``i``,
else for ``j``; the label is the class with the most votes (the first of ties). Its scores
are the decisions (two classes: ``[-d, d]``). Probabilities (``prob_a``/``prob_b``:
libsvm's pairwise coupling, an iterative solve), post transforms other than ``NONE`` on a
classifier and liblinear's form (no support vectors) stay as they are and are refused by
name; string labels reach here as their positions (:mod:`deploycomp.passes.ml_labels`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from deploycomp.ir import ROLE
from deploycomp.passes.ml_nodes import Emitter

__all__ = ["svm"]

_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _attr(node: ir.Node, name: str, default=None):
    attr = node.attributes.get(name)
    if attr is None:
        return default
    value = attr.value
    if isinstance(value, (list, tuple)):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value.decode() if isinstance(value, bytes) else value


def svm(node: ir.Node, opset: int, const: Callable[[str, np.ndarray], ir.Value],
        as_float: Callable[[], tuple[list[ir.Node], ir.Value]]) -> tuple[list[ir.Node], list[ir.Value]] | None:
    """Core-op nodes computing ``node`` (an ``SVMRegressor`` or ``SVMClassifier``) and the
    values that replace its outputs; None where it stays as it is (see the module
    docstring). ``const(suffix, array)`` makes an initializer, ``as_float()`` the input as
    float32."""
    classifier = node.op_type == "SVMClassifier"
    if opset < 13:  # written in opset 13 ops (a loaded model is at deploycomp.ir.MIN_OPSET or above)
        return None
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    kernel = _attr(node, "kernel_type", "LINEAR")
    params = _attr(node, "kernel_params", [])
    if shape is None or shape.rank() != 2 or not isinstance(shape[1], int) or kernel not in _KERNELS:
        return None
    features = shape[1]
    gamma, coef0, degree = (list(params) + [0.0, 0.0, 0.0])[:3]
    vectors = np.asarray(_attr(node, "support_vectors", []), np.float32)
    coefficients = np.asarray(_attr(node, "coefficients", []), np.float32)
    rho = np.asarray(_attr(node, "rho", []), np.float32)
    if vectors.size == 0 or vectors.size % features or coefficients.size == 0 or rho.size == 0:
        return None  # (liblinear's form: no support vectors)
    vectors = vectors.reshape(-1, features)
    count = len(vectors)
    if classifier:
        labels = _attr(node, "classlabels_ints")
        per_class = _attr(node, "vectors_per_class")
        prob_a, prob_b = _attr(node, "prob_a", []), _attr(node, "prob_b", [])
        if (not labels or _attr(node, "classlabels_strings") or len(prob_a) != len(prob_b)
                or (prob_a and len(prob_a) < len(labels) * (len(labels) - 1) // 2)
                or _attr(node, "post_transform", "NONE") != "NONE" or not per_class
                or len(per_class) != len(labels) or sum(per_class) != count or len(labels) < 2
                or coefficients.size < (len(labels) - 1) * count or rho.size < len(labels) * (len(labels) - 1) // 2):
            return None
    elif (_attr(node, "n_supports", 0) != count or coefficients.size != count
          or _attr(node, "post_transform", "NONE") != "NONE"):
        return None

    name = node.name or node.op_type
    nodes, x = as_float()

    add = Emitter(name, nodes)

    def scalar(suffix: str, value: float) -> ir.Value:
        return const(suffix, np.asarray(value, np.float32))

    def through_kernel(weights: np.ndarray) -> np.ndarray:
        """``weights`` (one row per support vector) as the kernel's output reads them. A
        linear kernel's are folded into the vectors in float64 (``x . (sv^T w)``): summed
        after the dot products in float32, features of magnitude 1e3 (scikit-learn's
        breast cancer data unscaled) cancelled to noise larger than the decision (a linear
        SVC's labels 75% equal to ONNX Runtime's)."""
        if kernel != "LINEAR":
            return weights.astype(np.float32)
        return (vectors.astype(np.float64).T @ weights.astype(np.float64)).astype(np.float32)

    if kernel == "LINEAR":
        k = x  # the support vectors are in the weights (through_kernel)
    elif kernel == "RBF":  # [N, 1, F] - [V, F] -> [N, V, F]
        row = add("Unsqueeze", [x, const("row_axis", np.asarray([1], np.int64))], "rows")
        diff = add("Sub", [row, const("support_vectors", vectors)], "differences")
        distance = add("ReduceSum", [add("Mul", [diff, diff], "squares"), const("feature_axis", np.asarray([2], np.int64))],
                       "distances", keepdims=0)
        k = add("Exp", [add("Mul", [distance, scalar("minus_gamma", -gamma)], "scaled")], "kernel")
    else:
        k = add("MatMul", [x, const("support_vectors_t", np.ascontiguousarray(vectors.T))], "dots")
        k = add("Add", [add("Mul", [k, scalar("gamma", gamma)], "scaled"), scalar("coef0", coef0)], "shifted")
        k = add("Pow", [k, scalar("degree", degree)], "kernel") if kernel == "POLY" else add("Tanh", [k], "kernel")

    if not classifier:
        y = add("Add", [add("MatMul", [k, const("coefficients", through_kernel(coefficients.reshape(count, 1)))], "sums"),
                        const("rho", rho[:1])], "decision")
        if _attr(node, "one_class", 0):
            y = add("Where", [add("Greater", [y, scalar("zero", 0.0)], "inside"), scalar("plus_one", 1.0),
                              scalar("minus_one", -1.0)], "one_class")
        return nodes, [y]

    classes = len(labels)
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    coefficients = coefficients[:(classes - 1) * count].reshape(classes - 1, count)
    pairs = [(i, j) for i in range(classes - 1) for j in range(i + 1, classes)]
    table = np.zeros((count, len(pairs)), np.float64)
    first = np.zeros((len(pairs), classes), np.float32)  # pair -> its class i (a vote when the decision is > 0)
    second = np.zeros((len(pairs), classes), np.float32)  # pair -> its class j
    for p, (i, j) in enumerate(pairs):
        table[starts[i]:starts[i + 1], p] = coefficients[j - 1, starts[i]:starts[i + 1]]
        table[starts[j]:starts[j + 1], p] = coefficients[i, starts[j]:starts[j + 1]]
        first[p, i] = second[p, j] = 1.0
    decision = add("Add", [add("MatMul", [k, const("pair_coefficients", through_kernel(table))], "pair_sums"),
                           const("rho", rho[:len(pairs)])], "decisions")
    wins = add("Cast", [add("Greater", [decision, scalar("zero", 0.0)], "first_wins")], "first_wins_float",
               to=ir.DataType.FLOAT)
    losses = add("Sub", [scalar("one", 1.0), wins], "second_wins")
    votes = add("Add", [add("MatMul", [wins, const("first_votes", first)], "first_votes"),
                        add("MatMul", [losses, const("second_votes", second)], "second_votes")], "votes")
    index = add("ArgMax", [votes], "label_index", axis=1, keepdims=0)
    label = add("Gather", [const("labels", np.asarray(labels, np.int64)), index], "label")
    if prob_a:
        scores = _coupled_probabilities(add, const, decision, pairs, classes, np.asarray(prob_a, np.float32),
                                        np.asarray(prob_b, np.float32), opset)
    elif classes == 2:
        scores = add("Concat", [add("Neg", [decision], "negated"), decision], "scores", axis=1)
    else:
        scores = decision
    return nodes, [label, scores]


COUPLING_STEPS = 100
"""libsvm's (and ONNX Runtime's) pairwise coupling runs at most this many rounds."""

SOLVE = "iterative-solve"
"""The coupling's nodes' role (:data:`deploycomp.ir.ROLE`): computed float in an int8
build (:data:`deploycomp.ir.FLOAT_ONLY`)."""


def _coupled_probabilities(add: Emitter, const: Callable[[str, np.ndarray], ir.Value], decision: ir.Value,
                           pairs: list[tuple[int, int]], classes: int, prob_a: np.ndarray, prob_b: np.ndarray,
                           opset: int) -> ir.Value:
    """Class probabilities from the pairwise decisions ``[N, pairs]`` as libsvm's
    ``multiclass_probability`` computes them, and ONNX Runtime after it (scikit-learn's
    ``SVC(probability=True)``): each pair's Platt probability ``r_ij = 1 - sigmoid(d A +
    B)`` clipped to [1e-7, 1 - 1e-7], then the fixed-point iteration on ``Q`` (``Q_tt =
    sum_j r_jt^2``, ``Q_tj = -r_jt r_tj``) from ``p = 1/k``, class by class, until every
    ``|Qp_t - pQp|`` is below ``0.005 / k``. Written out for its :data:`COUPLING_STEPS`
    rounds; a row whose rounds are over takes steps of 0, which change nothing exactly
    (``(x + 0) / 1``), so each row stops where ONNX Runtime stops it."""
    k, f32 = classes, np.float32
    made: dict[str, ir.Value] = {}
    first_node = len(add.nodes)

    def c(name: str, value) -> ir.Value:  # each constant once
        if name not in made:
            made[name] = const(name, np.asarray(value, np.int64 if isinstance(value, list) else f32))
        return made[name]

    def column(x: ir.Value, t: int, tag: str) -> ir.Value:  # [N, k] -> [N, 1]
        return add("Slice", [x, c(f"t{t}", [t]), c(f"t{t}_end", [t + 1]), c("class_axis", [1])], tag)

    first = np.zeros((len(pairs), k * k), f32)  # pair (i, j) -> r_ij's place, and 1 - r_ij's at (j, i)
    second = np.zeros((len(pairs), k * k), f32)
    for n, (i, j) in enumerate(pairs):
        first[n, i * k + j] = second[n, j * k + i] = 1.0
    one = c("one_f", 1.0)
    val = add("Add", [add("Mul", [decision, c("prob_a", prob_a[:len(pairs)])], "platt_scaled"),
                      c("prob_b", prob_b[:len(pairs)])], "platt")
    r = add("Clip", [add("Sub", [one, add("Sigmoid", [val], "platt_sigmoid")], "pair_probability"),
                     c("r_min", 1e-7), c("r_max", 1 - 1e-7)], "pair_clipped")
    flat = add("Add", [add("MatMul", [r, c("r_places", first)], "r_ij"),
                       add("MatMul", [add("Sub", [one, r], "r_complement"), c("r_mirrors", second)], "r_ji")], "r_flat")
    rm = add("Reshape", [flat, c("r_shape", [-1, k, k])], "r")
    diag = add("ReduceSum", [add("Mul", [rm, rm], "r_squared"), c("class_axis", [1])], "q_diagonal", keepdims=0)
    crossed = add("Mul", [add("Transpose", [rm], "r_t", perm=[0, 2, 1]), rm], "r_crossed")
    q = add("Sub", [add("Mul", [add("Unsqueeze", [diag, c("last_axis", [2])], "q_column"), c("eye", np.eye(k))],
                        "q_diagonal_matrix"), crossed], "q")
    q_tt = [column(diag, t, f"q_{t}{t}") for t in range(k)]
    q_row = [add("Squeeze", [add("Slice", [q, c(f"t{t}", [t]), c(f"t{t}_end", [t + 1]), c("class_axis", [1])],
                                 f"q_row{t}_slice"), c("class_axis", [1])], f"q_row{t}") for t in range(k)]
    rows = add("Slice", [add("Shape", [decision], "decision_shape"), c("t0", [0]), c("t0_end", [1]),
                         c("first_axis", [0])], "row_count")
    p = add("Expand", [c("p_start", np.full((1, k), 1.0 / k)),
                       add("Concat", [rows, c("k", [k])], "p_shape", axis=0)], "p_init")
    eps = c("eps", f32(0.005) / f32(k))
    done = None
    for step in range(COUPLING_STEPS):
        tag = f"c{step}"
        qp = add("Squeeze", [add("MatMul", [q, add("Unsqueeze", [p, c("last_axis", [2])], f"{tag}_p_column")],
                                 f"{tag}_qp_column"), c("last_axis", [2])], f"{tag}_qp")
        pqp = add("ReduceSum", [add("Mul", [p, qp], f"{tag}_p_qp"), c("class_axis", [1])], f"{tag}_pqp", keepdims=1)
        gap = add("Abs", [add("Sub", [qp, pqp], f"{tag}_gap")], f"{tag}_abs_gap")
        error = (add("ReduceMax", [gap, c("class_axis", [1])], f"{tag}_error", keepdims=1) if opset >= 18
                 else add("ReduceMax", [gap], f"{tag}_error", axes=[1], keepdims=1))
        converged = add("Less", [error, eps], f"{tag}_converged")
        done = converged if done is None else add("Or", [done, converged], f"{tag}_done")
        for t in range(k):
            at = f"{tag}_{t}"
            qp_t = column(qp, t, f"{at}_qp_t")
            diff = add("Where", [done, c("zero_f", 0.0), add("Div", [add("Sub", [pqp, qp_t], f"{at}_gap_t"), q_tt[t]],
                                                          f"{at}_step")], f"{at}_diff")
            p = add("Add", [p, add("Mul", [diff, c(f"e{t}", np.eye(k)[t])], f"{at}_p_step")], f"{at}_p_moved")
            grow = add("Add", [one, diff], f"{at}_grow")
            moved = add("Add", [pqp, add("Mul", [diff, add("Add", [add("Mul", [diff, q_tt[t]], f"{at}_dq"),
                                                                      add("Mul", [c("two_f", 2.0), qp_t], f"{at}_2qp")],
                                                             f"{at}_dq_2qp")], f"{at}_pqp_step")], f"{at}_pqp_moved")
            pqp = add("Div", [add("Div", [moved, grow], f"{at}_pqp_over"), grow], f"{at}_pqp")
            qp = add("Div", [add("Add", [qp, add("Mul", [diff, q_row[t]], f"{at}_qp_step")], f"{at}_qp_moved"), grow],
                     f"{at}_qp")
            p = add("Div", [p, grow], f"{at}_p")
    for node in add.nodes[first_node:]:  # an int8 build leaves the solve float (see deploycomp.ir.FLOAT_ONLY)
        node.metadata_props[ROLE] = SOLVE
    return p

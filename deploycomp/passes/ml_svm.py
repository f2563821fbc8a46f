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
        if (not labels or _attr(node, "classlabels_strings") or _attr(node, "prob_a")
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
    scores = add("Concat", [add("Neg", [decision], "negated"), decision], "scores", axis=1) if classes == 2 else decision
    return nodes, [label, scores]

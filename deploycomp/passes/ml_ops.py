"""ONNX-ML ops that are arithmetic, as the core ops that compute them.

scikit-learn pipelines converted by skl2onnx start with ``ai.onnx.ml`` ops: a
``StandardScaler`` becomes ``Scaler``, a linear model ``LinearRegressor``. No backend
here runs that domain (OpenVINO, TFLite and TensorRT all refused a gradient-boosting
surrogate's ``Scaler`` in front of an MLP), yet each is a line of arithmetic that
every runtime has, exactly as the ONNX-ML operator spec defines it:

* ``Scaler``: ``Y = (float(X) - offset) * scale``, ``offset`` and ``scale`` one value
  or one per column (the last axis);
* ``LinearRegressor`` (``post_transform`` NONE, ``[N, C]`` input): ``Y = X W^T +
  intercepts``, ``W`` the ``coefficients`` as ``targets`` rows (a MatMul and an Add,
  which the rules fuse into a Gemm);
* ``Binarizer``: ``Y = X > threshold`` as ``X``'s type;
* ``LinearClassifier`` (two or more classes, integer labels, ``post_transform`` NONE,
  LOGISTIC or SOFTMAX, ``[N, C]`` input): scores ``X W^T + intercepts``, the label the
  class of the highest score (``ArgMax``, the first of ties, as ONNX Runtime; a
  ``Gather`` of ``classlabels_ints`` unless they are 0..n-1), the scores' output through
  ``Sigmoid`` or ``Softmax``;
* ``ArrayFeatureExtractor``: ``X[..., indices]``, the indices flattened (ONNX Runtime
  keeps the last axis for a scalar index: a ``Gather`` on the last axis of the indices
  as one row), what skl2onnx writes after a ``LinearSVC`` to pick the positive class;
* ``Normalizer`` (``[N, C]`` or ``[C]``): each row divided by its maximum (MAX), the sum
  of its absolute values (L1) or its Euclidean norm (L2), a row whose divisor is 0
  passed through, as ONNX Runtime computes it.

A model written in ``ai.onnx.ml`` alone (a scikit-learn LogisticRegression, its
LinearClassifier and Normalizer; ONNX's own ML test files) gets a core opset
(:data:`deploycomp.ir.MIN_OPSET`) to write them in.

* ``TreeEnsembleRegressor`` and ``TreeEnsembleClassifier``: comparisons and matrix
  products that reach the same leaves (:mod:`deploycomp.passes.ml_trees`).
* ``SVMRegressor`` and ``SVMClassifier`` (without probabilities): the kernel with every
  support vector, then matrix products for the decisions and the one-against-one votes
  (:mod:`deploycomp.passes.ml_svm`).
* ``Imputer``, ``OneHotEncoder`` and numeric ``LabelEncoder``: scikit-learn's encoders
  (:mod:`deploycomp.passes.ml_encoders`).

Binary linear classifiers (ONNX Runtime's binary scores differ from the ONNX reference's),
string labels read inside the graph (a label that is only an output arrives as its
position: :mod:`deploycomp.passes.ml_labels`), ``ZipMap`` and the rest stay as they are: a
backend that cannot run them says so by name.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from deploycomp.ir import MIN_OPSET, add_initializer, replace_value
from deploycomp.passes.ml_encoders import imputer, label_encoder, one_hot_encoder
from deploycomp.passes.ml_svm import svm
from deploycomp.passes.ml_trees import tree_ensemble

__all__ = ["MLOpsToCorePass"]

ML_DOMAIN = "ai.onnx.ml"

log = logging.getLogger(__name__)


def _floats(node: ir.Node, name: str, default: list[float]) -> np.ndarray:
    attr = node.attributes.get(name)
    return np.asarray(list(attr.as_floats()) if attr is not None else default, np.float32)


class MLOpsToCorePass(ir.passes.InPlacePass):
    """Rewrite ``Scaler``, ``LinearRegressor`` (no post-transform), ``Binarizer``,
    ``LinearClassifier``, ``ArrayFeatureExtractor``, ``Normalizer``, ``Imputer``,
    ``OneHotEncoder``, numeric ``LabelEncoder``, tree ensembles and
    support vector machines of the main graph as core ops, where they are arithmetic (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        rewritable = [n for n in graph if n.domain == ML_DOMAIN and hasattr(self, f"_{n.op_type.lower()}")]
        if not rewritable:
            return ir.passes.PassResult(model, False)
        if "" not in model.opset_imports:  # ML ops alone: a core opset to write them in
            model.opset_imports[""] = MIN_OPSET
        self.opset = model.opset_imports[""]
        while rewritable:
            done = [node for node in rewritable if self._rewrite(graph, node)]
            modified = modified or bool(done)
            rewritable = [n for n in rewritable if n not in done]
            if not done or not rewritable:
                break
            # what ONNX's shape inference could not type behind an ML op (a Scaler's output
            # feeding a tree ensemble, which needs its width) is core ops now: type it, retry
            ShapeInferencePass()(model)
        if modified and not any(n.domain == ML_DOMAIN for n in ir.traversal.RecursiveGraphIterator(graph)):
            model.opset_imports.pop(ML_DOMAIN, None)
        return ir.passes.PassResult(model, modified)

    def _rewrite(self, graph: ir.Graph, node: ir.Node) -> bool:
        """``node`` replaced by its core ops, where its method makes them."""
        made = getattr(self, f"_{node.op_type.lower()}")(graph, node)
        if made is None:
            return False
        nodes, news = made if isinstance(made, tuple) else (made, [made[-1].outputs[0]])
        graph.insert_before(node, nodes)
        for out, new in zip(node.outputs, news):
            if new is None or out is None:
                continue
            new.shape, new.type = out.shape, out.type
            replace_value(out, new, "__ml")
        graph.remove(node, safe=True)
        return True

    @staticmethod
    def _const(graph: ir.Graph, node: ir.Node, suffix: str, value: np.ndarray) -> ir.Value:
        return add_initializer(graph, f"{node.name or node.op_type}__{suffix}", value)

    def _as_float(self, node: ir.Node) -> tuple[list[ir.Node], ir.Value]:
        x = node.inputs[0]
        if x.dtype == ir.DataType.FLOAT:
            return [], x
        cast = ir.node("Cast", [x], attributes={"to": ir.DataType.FLOAT}, name=f"{node.name}__float")
        return [cast], cast.outputs[0]

    def _scaler(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        offset, scale = _floats(node, "offset", [0.0]), _floats(node, "scale", [1.0])
        cast, x = self._as_float(node)
        sub = ir.node("Sub", [x, self._const(graph, node, "offset", offset)], name=f"{node.name}__offset")
        mul = ir.node("Mul", [sub.outputs[0], self._const(graph, node, "scale", scale)], name=node.name)
        return [*cast, sub, mul]

    def _linearregressor(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        post = node.attributes.get("post_transform")
        if post is not None and post.as_string() != "NONE":
            return None
        targets = node.attributes.get("targets")
        targets = targets.as_int() if targets is not None else 1
        coefficients = _floats(node, "coefficients", [])
        if coefficients.size == 0 or coefficients.size % targets:
            return None
        weights = coefficients.reshape(targets, -1)
        intercepts = _floats(node, "intercepts", [0.0] * targets)
        if node.inputs[0].shape is not None and node.inputs[0].shape.rank() != 2:
            return None  # [N, C] (what skl2onnx writes); a 1-D input stays as it is
        cast, x = self._as_float(node)
        matmul = ir.node("MatMul", [x, self._const(graph, node, "coefficients", weights.T)],
                         name=f"{node.name}__matmul")
        add = ir.node("Add", [matmul.outputs[0], self._const(graph, node, "intercepts",
                                                             np.broadcast_to(intercepts, (targets,)))],
                      name=node.name)
        return [*cast, matmul, add]

    def _binarizer(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        x = node.inputs[0]
        if x.dtype is None:
            return None
        threshold = node.attributes.get("threshold")
        dtype = x.dtype.numpy()
        t = self._const(graph, node, "threshold", np.asarray(threshold.as_float() if threshold else 0.0, dtype))
        above = ir.node("Greater", [x, t], name=f"{node.name}__above")
        cast = ir.node("Cast", [above.outputs[0]], attributes={"to": x.dtype}, name=node.name)
        return [above, cast]

    def _imputer(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        return imputer(node, self._constants(graph, node))

    def _onehotencoder(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        return one_hot_encoder(node, self._constants(graph, node))

    def _labelencoder(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        return label_encoder(node, self.opset, self._constants(graph, node))

    def _constants(self, graph: ir.Graph, node: ir.Node):
        return lambda suffix, value: self._const(graph, node, suffix, value)

    def _arrayfeatureextractor(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        x, indices = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if x is None or indices is None:
            return None
        nodes: list[ir.Node] = []
        if indices.const_value is not None:  # skl2onnx's positive-class index, a scalar
            flat = self._const(graph, node, "indices", indices.const_value.numpy().astype(np.int64).reshape(-1))
        else:
            reshape = ir.node("Reshape", [indices, self._const(graph, node, "flat", np.asarray([-1], np.int64))],
                              name=f"{node.name}__flat")
            nodes.append(reshape)
            flat = reshape.outputs[0]
        nodes.append(ir.node("Gather", [x, flat], attributes={"axis": -1}, name=node.name))
        return nodes

    def _linearclassifier(self, graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], list[ir.Value]] | None:
        post = node.attributes.get("post_transform")
        post = post.as_string() if post is not None else "NONE"
        labels = node.attributes.get("classlabels_ints")
        labels = np.asarray(list(labels.as_ints()), np.int64) if labels is not None else None
        intercepts = _floats(node, "intercepts", [])
        coefficients = _floats(node, "coefficients", [])
        classes = intercepts.size  # ONNX Runtime's class count
        shape = node.inputs[0].shape
        if (post not in ("NONE", "LOGISTIC", "SOFTMAX") or labels is None or classes < 2 or labels.size != classes
                or shape is None or shape.rank() != 2 or not isinstance(shape[1], int)):
            return None  # binary scores, string labels, PROBIT...: as they are
        features = shape[1]
        if coefficients.size < classes * features:
            return None
        if coefficients.size > classes * features:
            # ONNX Runtime reads the first classes x features (its Gemm's B): so does the build
            log.warning("%s: %d coefficients for %d classes x %d input features; computed as ONNX Runtime does, "
                        "from the first %d", node.name or "LinearClassifier", coefficients.size, classes, features,
                        classes * features)
        cast, x = self._as_float(node)
        weights = coefficients[: classes * features].reshape(classes, features)
        matmul = ir.node("MatMul", [x, self._const(graph, node, "coefficients", weights.T)], name=f"{node.name}__matmul")
        add = ir.node("Add", [matmul.outputs[0], self._const(graph, node, "intercepts", intercepts)],
                      name=f"{node.name}__scores")
        nodes, scores = [*cast, matmul, add], add.outputs[0]
        argmax = ir.node("ArgMax", [scores], attributes={"axis": 1, "keepdims": 0}, name=f"{node.name}__argmax")
        nodes.append(argmax)
        label = argmax.outputs[0]
        if not np.array_equal(labels, np.arange(classes)):
            gather = ir.node("Gather", [self._const(graph, node, "classlabels", labels), label],
                             attributes={"axis": 0}, name=f"{node.name}__label")
            nodes.append(gather)
            label = gather.outputs[0]
        if post != "NONE":
            transform = (ir.node("Sigmoid", [scores], name=f"{node.name}__logistic") if post == "LOGISTIC"
                         else ir.node("Softmax", [scores], attributes={"axis": 1}, name=f"{node.name}__softmax"))
            nodes.append(transform)
            scores = transform.outputs[0]
        return nodes, [label, scores]

    def _treeensembleregressor(self, graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], list[ir.Value]] | None:
        return tree_ensemble(node, self.opset, lambda suffix, value: self._const(graph, node, suffix, value),
                             lambda: self._as_float(node))

    _treeensembleclassifier = _treeensemble = _treeensembleregressor

    def _svmregressor(self, graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], list[ir.Value]] | None:
        return svm(node, self.opset, lambda suffix, value: self._const(graph, node, suffix, value),
                   lambda: self._as_float(node))

    _svmclassifier = _svmregressor

    def _normalizer(self, graph: ir.Graph, node: ir.Node) -> list[ir.Node] | None:
        norm = node.attributes.get("norm")
        norm = norm.as_string() if norm is not None else "MAX"
        shape = node.inputs[0].shape
        if norm not in ("MAX", "L1", "L2") or shape is None or shape.rank() not in (1, 2):
            return None
        cast, x = self._as_float(node)
        nodes, name = list(cast), node.name or "normalizer"
        if norm == "MAX":
            if self.opset >= 18:  # ReduceMax's axes an input from opset 18
                reduce = ir.node("ReduceMax", [x, self._const(graph, node, "axes", np.asarray([-1], np.int64))],
                                 attributes={"keepdims": 1}, name=f"{name}__max")
            else:
                reduce = ir.node("ReduceMax", [x], attributes={"axes": [-1], "keepdims": 1}, name=f"{name}__max")
            nodes.append(reduce)
        else:
            # a row's sum as a product with ones: ReduceSum's axes moved from attribute to input at opset 13
            term = ir.node("Abs", [x], name=f"{name}__abs") if norm == "L1" else ir.node("Mul", [x, x], name=f"{name}__square")
            ones = np.ones((shape[-1], 1) if isinstance(shape[-1], int) else (), np.float32)
            if ones.ndim != 2:
                return None
            # (N, C) @ (C, 1) is (N, 1); a rank-1 row's (C,) @ (C, 1) is (1,)
            total = ir.node("MatMul", [term.outputs[0], self._const(graph, node, "ones", ones)], name=f"{name}__sum")
            nodes += [term, total]
            if norm == "L2":
                nodes.append(ir.node("Sqrt", [total.outputs[0]], name=f"{name}__norm"))
        divisor = nodes[-1].outputs[0]
        zero = ir.node("Equal", [divisor, self._const(graph, node, "zero", np.asarray(0.0, np.float32))],
                       name=f"{name}__is_zero")
        safe = ir.node("Where", [zero.outputs[0], self._const(graph, node, "one", np.asarray(1.0, np.float32)), divisor],
                       name=f"{name}__divisor")
        div = ir.node("Div", [x, safe.outputs[0]], name=name)
        return [*nodes, zero, safe, div]

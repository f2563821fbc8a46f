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
* ``Binarizer``: ``Y = X > threshold`` as ``X``'s type.

Tree ensembles, classifiers with string labels, ``ZipMap`` and the rest stay as they
are: a backend that cannot run them says so by name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_value

__all__ = ["MLOpsToCorePass"]

ML_DOMAIN = "ai.onnx.ml"


def _floats(node: ir.Node, name: str, default: list[float]) -> np.ndarray:
    attr = node.attributes.get(name)
    return np.asarray(list(attr.as_floats()) if attr is not None else default, np.float32)


class MLOpsToCorePass(ir.passes.InPlacePass):
    """Rewrite ``Scaler``, ``LinearRegressor`` (no post-transform) and ``Binarizer`` of the
    main graph as core ops (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        if "" not in model.opset_imports:  # ML ops alone (ONNX's own ML test files): no core opset to write in
            return ir.passes.PassResult(model, False)
        for node in list(graph):
            if node.domain != ML_DOMAIN:
                continue
            made = getattr(self, f"_{node.op_type.lower()}", None)
            if made is None:
                continue
            nodes = made(graph, node)
            if nodes is None:
                continue
            graph.insert_before(node, nodes)
            out = node.outputs[0]
            new = nodes[-1].outputs[0]
            new.shape, new.type = out.shape, out.type
            replace_value(out, new, "__ml")
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

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

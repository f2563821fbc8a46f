"""ONNX Runtime's fused ``com.microsoft`` ops, as the core ops they fuse.

A transformer exported and then run through ONNX Runtime's optimizer (``optimum``'s
``-O2``, ``onnxruntime.transformers.optimizer``) arrives with ops only ONNX Runtime
defines. OpenVINO reads several; TFLite and TensorRT refused a model for its
``BiasGelu`` and ``SkipLayerNormalization``. Each of those below is a few core ops,
exactly as ONNX Runtime's contrib-op spec defines it:

* ``Gelu``: ``0.5 x (1 + erf(x / sqrt 2))``; ``BiasGelu(a, b)``: ``Gelu(a + b)``;
* ``FastGelu(x[, bias])``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, ``x`` with the bias added;
* ``QuickGelu(x)``: ``x sigmoid(alpha x)`` (``alpha`` 1.702 unless given);
* ``BiasAdd(x, bias, skip)``: ``x + bias + skip``;
* ``SkipLayerNormalization(x, skip, gamma[, beta[, bias]])``: ``s = x + skip (+ bias)``,
  then ``LayerNormalization(s, gamma, beta)`` over the last axis (its fourth output is
  ``s``; the mean and inverse deviation outputs, training-only, stay unsupported);
* ``SkipSimplifiedLayerNormalization``: the same ``s`` then ``s / sqrt(mean(s^2) + eps) gamma``;
* ``FusedMatMul(a, b)``: ``alpha (a or a^T) @ (b or b^T)``, transposing the last two axes.

The GELU forms are written out with ``Erf`` / ``Tanh``, as exporters write them, so the
optimizer's activation rules fuse them back into ``Gelu`` where the opset has it.
Attention, EmbedLayerNormalization and the other fused subgraphs stay: a backend that
cannot run them says so by name.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from deploycomp.ir import replace_value

__all__ = ["ContribOpsToCorePass"]

MS_DOMAIN = "com.microsoft"


class _Emit:
    """Builds core nodes for one contrib node, named after it, in float ``dtype``."""

    def __init__(self, graph: ir.Graph, node: ir.Node, opset: int):
        self.graph, self.node, self.nodes, self.opset = graph, node, [], opset
        self.base = node.name or node.outputs[0].name
        x = next((v for v in node.inputs if v is not None), None)
        self.dtype = x.dtype.numpy() if x is not None and x.dtype is not None else np.dtype(np.float32)

    def __call__(self, op: str, *inputs: ir.Value, **attributes) -> ir.Value:
        n = ir.node(op, list(inputs), attributes=attributes or None, name=f"{self.base}__{op.lower()}{len(self.nodes)}")
        n.outputs[0].name = n.name
        self.nodes.append(n)
        return n.outputs[0]

    def const(self, value, dtype=None) -> ir.Value:
        array = np.asarray(value, dtype=dtype or self.dtype)
        name = f"{self.base}__c{len(self.graph.initializers)}"
        while name in self.graph.initializers:
            name += "_"
        v = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        v.type, v.shape = ir.TensorType(ir.DataType.from_numpy(array.dtype)), ir.Shape(array.shape)
        self.graph.register_initializer(v)
        return v

    def gelu(self, x: ir.Value) -> ir.Value:
        erf = self("Erf", self("Div", x, self.const(math.sqrt(2.0))))
        return self("Mul", self("Mul", x, self.const(0.5)), self("Add", erf, self.const(1.0)))


def _inputs(node: ir.Node) -> list[ir.Value | None]:
    return list(node.inputs) + [None] * 5


def _gelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    return [e.gelu(node.inputs[0])]


def _biasgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    return [e.gelu(e("Add", node.inputs[0], node.inputs[1]))]


def _fastgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x, bias = _inputs(node)[:2]
    if bias is not None:
        x = e("Add", x, bias)
    cube = e("Mul", e("Mul", x, x), x)
    inner = e("Mul", e("Add", x, e("Mul", cube, e.const(0.044715))), e.const(math.sqrt(2.0 / math.pi)))
    return [e("Mul", e("Mul", x, e.const(0.5)), e("Add", e("Tanh", inner), e.const(1.0)))]


def _quickgelu(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x = node.inputs[0]
    alpha = node.attributes.get_float("alpha", 1.702)
    return [e("Mul", x, e("Sigmoid", e("Mul", x, e.const(alpha))))]


def _biasadd(e: _Emit, node: ir.Node) -> list[ir.Value]:
    x, bias, skip = node.inputs[:3]
    return [e("Add", e("Add", x, bias), skip)]


def _skip_sum(e: _Emit, node: ir.Node, bias_index: int) -> ir.Value:
    ins = _inputs(node)
    s = e("Add", ins[0], ins[1])
    return e("Add", s, ins[bias_index]) if ins[bias_index] is not None else s


def _skiplayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    outs = list(node.outputs) + [None] * 4
    if any(v is not None and (v.uses() or v.is_graph_output()) for v in outs[1:3]):
        return None  # mean / inverse std-dev: training outputs, no core op gives them
    ins = _inputs(node)
    s = _skip_sum(e, node, 4)
    eps = node.attributes.get_float("epsilon", 1e-12)
    norm = (s, ins[2]) if ins[3] is None else (s, ins[2], ins[3])
    return [e("LayerNormalization", *norm, axis=-1, epsilon=eps), None, None, s]


def _skipsimplifiedlayernormalization(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    outs = list(node.outputs) + [None] * 4
    if any(v is not None and (v.uses() or v.is_graph_output()) for v in outs[1:3]):
        return None
    ins = _inputs(node)
    s = _skip_sum(e, node, 3)
    eps = node.attributes.get_float("epsilon", 1e-12)
    square = e("Mul", s, s)
    mean_square = (e("ReduceMean", square, e.const(np.array([-1], np.int64), np.int64), keepdims=1)
                   if e.opset >= 18 else e("ReduceMean", square, axes=[-1], keepdims=1))  # axes an input from 18
    y = e("Mul", e("Div", s, e("Sqrt", e("Add", mean_square, e.const(eps)))), ins[2])
    return [y, None, None, s]


def _fusedmatmul(e: _Emit, node: ir.Node) -> list[ir.Value] | None:
    a, b = node.inputs[:2]
    attrs = node.attributes
    if attrs.get_int("transBatchA", 0) or attrs.get_int("transBatchB", 0):
        return None
    if any(attrs.get_int(f, 0) and v.shape is None for v, f in ((a, "transA"), (b, "transB"))):
        return None
    operands = []
    for value, flag in ((a, "transA"), (b, "transB")):
        if attrs.get_int(flag, 0):
            rank = len(value.shape)
            value = e("Transpose", value, perm=list(range(rank - 2)) + [rank - 1, rank - 2])
        operands.append(value)
    y = e("MatMul", *operands)
    alpha = attrs.get_float("alpha", 1.0)
    return [e("Mul", y, e.const(alpha)) if alpha != 1.0 else y]


_REWRITES = {"Gelu": _gelu, "BiasGelu": _biasgelu, "FastGelu": _fastgelu, "QuickGelu": _quickgelu,
             "BiasAdd": _biasadd, "SkipLayerNormalization": _skiplayernormalization,
             "SkipSimplifiedLayerNormalization": _skipsimplifiedlayernormalization, "FusedMatMul": _fusedmatmul}


class ContribOpsToCorePass(ir.passes.InPlacePass):
    """Rewrite the main graph's ``com.microsoft`` ops listed in the module docstring as
    core ops, each output keeping its name; others are left as they are."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        if "" not in model.opset_imports:
            return ir.passes.PassResult(model, False)
        for node in list(graph):
            rewrite = _REWRITES.get(node.op_type) if node.domain == MS_DOMAIN else None
            if rewrite is None:
                continue
            e = _Emit(graph, node, model.opset_imports[""])
            news = rewrite(e, node)
            if news is None:  # (checked before any constant was made)
                continue
            graph.insert_before(node, e.nodes)
            for out, new in zip(node.outputs, news):
                if out is None or new is None:
                    continue
                new.shape, new.type = out.shape, out.type
                replace_value(out, new, "__contrib")
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

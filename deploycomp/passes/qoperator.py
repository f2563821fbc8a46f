"""ONNX Runtime's QOperator format as the QDQ form of the same arithmetic.

``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QOperator)`` (the
format of many "-int8" models, the ONNX Model Zoo's among them) writes each quantized op
as one integer op: ``QLinearConv`` and ``QLinearMatMul`` (core ONNX), and ONNX Runtime's
``com.microsoft`` ``QGemm``, ``QLinearAdd``, ``QLinearMul``, ``QLinearSigmoid``, ``QLinearLeakyRelu``,
``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearConcat`` and
``QLinearSoftmax``. Each computes the float op on its dequantized inputs and quantizes
the result to its output's encoding, saturating (a HardSwish's clip is left to the
output range [0, 6]). OpenVINO 2026.4 reads the element-wise ones and wraps the result
instead of saturating it (a PP-OCR recogniser's output at cosine 0.0005); TFLite and
TensorRT have none of them.

Written as ``DequantizeLinear`` of each input, the float op, and ``QuantizeLinear`` to
the output's encoding, each is what ONNX defines those ops to compute, and the model is
one that arrives int8 in QDQ form (:mod:`deploycomp.quant.model_qdq`): its encodings
kept, conformed to each backend's. A ``QLinearConv``'s int32 bias dequantizes at the
input's scale times the weights'. What is left unrewritten (channels-last pooling, a
``QLinearSoftmax`` of opset-12 semantics, scales that are not constants) a backend that
cannot run says so by name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_value
from deploycomp.passes.replacement import Replacement
from deploycomp.passes.rules._util import const as constant

__all__ = ["QOperatorToQDQPass"]

MS_DOMAIN = "com.microsoft"


class _Emit(Replacement):
    """Nodes made for one QLinear op, with its encodings written as QDQ."""

    def dequantized(self, x: ir.Value, scale: ir.Value, zero_point: ir.Value | None, axis: int | None = None) -> ir.Value:
        return self("DequantizeLinear", x, scale, *([zero_point] if zero_point is not None else []),
                    **({"axis": axis} if axis is not None else {}))

    def quantized(self, y: ir.Value, scale: ir.Value, zero_point: ir.Value | None) -> ir.Value:
        return self("QuantizeLinear", y, scale, *([zero_point] if zero_point is not None else []))


def _inputs(node: ir.Node, n: int) -> list[ir.Value | None]:
    return list(node.inputs) + [None] * (n - len(node.inputs))


def _axis_of(scale: ir.Value, axis: int) -> int | None:
    """``axis`` for a per-channel scale, None for one value."""
    data = constant(scale)
    return axis if data is not None and data.size > 1 else None


def _conv(e: _Emit, node: ir.Node) -> ir.Value | None:
    x, xs, xz, w, ws, wz, ys, yz, b = _inputs(node, 9)
    attrs = {a.name: a for a in node.attributes.values()}
    x = e.dequantized(x, xs, xz)
    w = e.dequantized(w, ws, wz, _axis_of(ws, 0))
    inputs = [x, w]
    if b is not None:
        x_scale, w_scale = constant(xs), constant(ws)
        if x_scale is None or w_scale is None:
            return None
        scale = add_initializer(e.graph, f"{e.base}__bias_scale",
                                (x_scale.astype(np.float32) * w_scale.astype(np.float32)).reshape(-1))
        inputs.append(e.dequantized(b, scale, None, 0 if np.size(w_scale) > 1 else None))
    return e.quantized(e("Conv", *inputs, **attrs), ys, yz)


def _matmul(e: _Emit, node: ir.Node) -> ir.Value | None:
    a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
    b_rank = len(b.shape) if b.shape is not None else 2
    y = e("MatMul", e.dequantized(a, as_, az), e.dequantized(b, bs, bz, _axis_of(bs, b_rank - 1)))
    return e.quantized(y, ys, yz)


def _gemm(e: _Emit, node: ir.Node) -> ir.Value | None:
    """``com.microsoft`` ``QGemm`` (ONNX Runtime quantizes a MatMul + Add it fused into a
    Gemm so): its int32 ``C`` at ``alpha`` times the inputs' scales, its output float
    where it has no encoding of its own."""
    a, as_, az, b, bs, bz, c, ys, yz = _inputs(node, 9)
    attrs = node.attributes
    alpha, trans_a, trans_b = attrs.get_float("alpha", 1.0), attrs.get_int("transA", 0), attrs.get_int("transB", 0)
    inputs = [e.dequantized(a, as_, az), e.dequantized(b, bs, bz, _axis_of(bs, 0 if trans_b else 1))]
    if c is not None:
        a_scale, b_scale = constant(as_), constant(bs)
        if a_scale is None or b_scale is None:
            return None
        scale = add_initializer(e.graph, f"{e.base}__bias_scale",
                                (alpha * a_scale.astype(np.float32) * b_scale.astype(np.float32)).reshape(-1))
        inputs.append(e.dequantized(c, scale, None, 0 if np.size(b_scale) > 1 else None))
    y = e("Gemm", *inputs, alpha=alpha, transA=trans_a, transB=trans_b)
    return y if ys is None else e.quantized(y, ys, yz)


def _binary(op_type: str):
    def rewrite(e: _Emit, node: ir.Node) -> ir.Value | None:
        a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
        return e.quantized(e(op_type, e.dequantized(a, as_, az), e.dequantized(b, bs, bz)), ys, yz)
    return rewrite


def _unary(op_type: str, keep: tuple[str, ...] = ()):
    def rewrite(e: _Emit, node: ir.Node) -> ir.Value | None:
        if node.attributes.get_int("channels_last", 0):
            return None  # an NHWC pooling: left as written
        x, xs, xz, ys, yz = _inputs(node, 5)
        attrs = {k: a for k, a in ((k, node.attributes.get(k)) for k in keep) if a is not None}
        return e.quantized(e(op_type, e.dequantized(x, xs, xz), **attrs), ys, yz)
    return rewrite


def _softmax(e: _Emit, node: ir.Node) -> ir.Value | None:
    """``opset`` below 13: Softmax's old semantics, the input flattened to 2-D from the axis
    on (the same as the new one at the last axis), written out as such."""
    x, xs, xz, ys, yz = _inputs(node, 5)
    axis = node.attributes.get_int("axis", -1)
    x = e.dequantized(x, xs, xz)
    if node.attributes.get_int("opset", 13) >= 13:
        return e.quantized(e("Softmax", x, axis=axis), ys, yz)
    flat = e("Softmax", e("Flatten", x, axis=axis), axis=1)
    return e.quantized(e("Reshape", flat, e("Shape", x)), ys, yz)


def _concat(e: _Emit, node: ir.Node) -> ir.Value | None:
    ys, yz, *rest = list(node.inputs)
    if len(rest) % 3:
        return None
    parts = [e.dequantized(rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
    return e.quantized(e("Concat", *parts, axis=node.attributes.get_int("axis", 0)), ys, yz)


_REWRITES = {
    ("", "QLinearConv"): _conv,
    ("", "QLinearMatMul"): _matmul,
    (MS_DOMAIN, "QGemm"): _gemm,
    (MS_DOMAIN, "QLinearAdd"): _binary("Add"),
    (MS_DOMAIN, "QLinearMul"): _binary("Mul"),
    (MS_DOMAIN, "QLinearSigmoid"): _unary("Sigmoid"),
    (MS_DOMAIN, "QLinearLeakyRelu"): _unary("LeakyRelu", ("alpha",)),
    (MS_DOMAIN, "QLinearGlobalAveragePool"): _unary("GlobalAveragePool"),
    (MS_DOMAIN, "QLinearAveragePool"): _unary("AveragePool", ("auto_pad", "ceil_mode", "count_include_pad",
                                                              "kernel_shape", "pads", "strides")),
    (MS_DOMAIN, "QLinearSoftmax"): _softmax,
    (MS_DOMAIN, "QLinearConcat"): _concat,
}


MOVES = frozenset({"Resize", "MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                   "Split", "Pad", "Identity", "DepthToSpace", "SpaceToDepth", "Upsample"})
"""Ops the QOperator format runs on the quantized integers themselves (they move values, or
pick one): each reads its input dequantized and writes it quantized again to the same
encoding, so every encoding is a QuantizeLinear -> DequantizeLinear pair (TensorRT's parser
refused the zero point of a PP-OCR detector's integer Resize)."""


def _float_moves(graph: ir.Graph) -> bool:
    moved = False
    for node in list(graph):
        if node.op_type not in MOVES or node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
            continue
        quant = node.inputs[0].producer()
        if quant is None or quant.op_type != "QuantizeLinear":
            continue
        scale, zero_point = _inputs(quant, 3)[1:3]
        e = _Emit(graph, node)
        node.replace_input_with(0, e.dequantized(node.inputs[0], scale, zero_point))
        graph.insert_before(node, e.nodes)
        # every output (a Split's parts too: one left on the integers kept YOLOv8n's
        # QOperator export uint8 through its Split, which TFLite and TensorRT refused)
        for i, out in enumerate(node.outputs):
            requant = ir.node("QuantizeLinear", [out, scale] + ([zero_point] if zero_point is not None else []),
                              name=f"{e.base}__requantized" + (f"_{i}" if i else ""))
            graph.insert_after(node, [requant])
            requant.outputs[0].shape, requant.outputs[0].type = out.shape, out.type
            replace_value(out, requant.outputs[0], "__float")
            requant.replace_input_with(0, out)  # (replace_value moved this reader too)
            out.type = ir.TensorType(ir.DataType.FLOAT)
        moved = True
    return moved


class QOperatorToQDQPass(ir.passes.InPlacePass):
    """Rewrite the main graph's QLinear ops listed in the module docstring as
    DequantizeLinear -> float op -> QuantizeLinear, each output keeping its name; then the
    moves that read their integers (:data:`MOVES`) likewise."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for node in list(graph):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            rewrite = _REWRITES.get((domain, node.op_type))
            if rewrite is None:
                continue
            e = _Emit(graph, node)
            new = rewrite(e, node)
            if new is None:
                continue
            graph.insert_before(node, e.nodes)
            out = node.outputs[0]
            new.shape, new.type = out.shape, out.type
            replace_value(out, new, "__qoperator")
            graph.remove(node, safe=True)
            modified = True
        modified = (modified and _float_moves(graph)) or modified
        if modified and MS_DOMAIN in model.opset_imports and not any(
                n.domain == MS_DOMAIN for n in ir.traversal.RecursiveGraphIterator(graph)):
            del model.opset_imports[MS_DOMAIN]
        return ir.passes.PassResult(model, modified)

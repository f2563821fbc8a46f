"""A per-channel affine left standing as a 1x1 depthwise Conv (TFLite).

A BatchNorm that no Conv can absorb (after a ReLU, after a concat: Keras exports through
tf2onnx leave ``Relu -> Mul(s) -> Add(t) -> MaxPool``; a pre-activation ResNet's norm
after the residual sum) stays as a ``Mul`` and an ``Add`` by constants that vary per
channel. TFLite's int8 MUL and ADD take their constant operand with one scale for the
whole tensor, and a channel whose factor or shift is small next to the largest rounds to
a few levels or to zero: a U-Net from a machine-readable-zone reader (four such norms)
fell to cosine 0.35 all-int8 on Android, while OpenVINO, which leaves them float, held
0.998 with every layer int8.

``x * s + t`` with ``s``, ``t`` constant per channel (either may be absent) is a
depthwise convolution with a 1x1 kernel: weight ``s``, bias ``t``. As such it is an int8
layer like any other: its weights one scale per channel (each factor to a full 127
levels), its bias in int32 at the input's step times the weight's, and the float-layer
search judges it. The same arithmetic in float (one multiply and add per element). It
runs after the rewrite rules have settled (:mod:`deploycomp.passes.rules.conv_affine`
folds an affine into a neighbouring Conv wherever that is exact), and only for TFLite:
elsewhere the int8 encodings leave such ops float, and the boosters use them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["AffineToDepthwiseConvPass"]


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def _operands(node: ir.Node) -> tuple[ir.Value, np.ndarray] | None:
    """(the activation, the constant) of a binary Mul or Add with exactly one constant."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    consts = [_const(v) for v in node.inputs]
    if (consts[0] is None) == (consts[1] is None):
        return None
    x, c = (node.inputs[1], consts[0]) if consts[1] is None else (node.inputs[0], consts[1])
    return x, c


def _channels(c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``c`` as one float32 value per channel of an ``N x C x ...`` tensor of ``shape``
    (None where it varies along another axis or would broadcast the tensor wider)."""
    if c.ndim > len(shape) or not np.issubdtype(c.dtype, np.floating):
        return None
    full = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
    if full.shape[0] != 1 or any(d != 1 for d in full.shape[2:]) or full.shape[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(full.reshape(-1), (shape[1],)).astype(np.float32)


def _affine(node: ir.Node) -> tuple[ir.Value, np.ndarray, np.ndarray] | None:
    """(x, scale, shift) of a Mul or Add by a per-channel constant on a float32 NCHW or NCL
    tensor of static shape."""
    if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx"):
        return None
    found = _operands(node)
    if found is None:
        return None
    x, c = found
    shape = tuple(x.shape) if x.shape is not None else ()
    if (x.dtype != ir.DataType.FLOAT or len(shape) not in (3, 4) or not all(isinstance(d, int) for d in shape)
            or tuple(node.outputs[0].shape or ()) != shape):
        return None
    per_channel = _channels(c, shape)
    if per_channel is None:
        return None
    if node.op_type == "Mul":
        return x, per_channel, np.zeros_like(per_channel)
    return x, np.ones_like(per_channel), per_channel


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    unique, k = name, 1
    while unique in graph.initializers:
        unique, k = f"{name}_{k}", k + 1
    value = ir.Value(name=unique, const_value=ir.tensor(np.ascontiguousarray(array, np.float32)))
    value.shape, value.type = ir.Shape(array.shape), ir.TensorType(ir.DataType.FLOAT)
    graph.register_initializer(value)
    return value


class AffineToDepthwiseConvPass(ir.passes.InPlacePass):
    """A ``Mul`` by per-channel factors (and the ``Add`` of a constant after it) as a 1x1
    depthwise ``Conv``. A factor the same on every channel is left alone (one scale holds
    it exactly), and so is a shift alone: a bias ``Add`` after a layer that is not a Conv
    (ONNX Runtime's integer ops written as float: 59 of them in a table-edge model) would
    only give the int8 search more layers to judge."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.graph is not graph:
                continue  # already replaced
            affine = _affine(node) if node.op_type == "Mul" else None
            if affine is None:
                continue
            x, scale, shift = affine
            last = node
            users = node.outputs[0].uses()
            if node.op_type == "Mul" and len(users) == 1 and not node.outputs[0].is_graph_output():
                after = _affine(users[0].node)
                if after is not None and after[0] is node.outputs[0] and users[0].node.op_type == "Add":
                    shift, last = after[2], users[0].node
            if np.all(scale == scale[0]):
                continue
            channels, rank = scale.size, len(x.shape)
            base = node.name or node.outputs[0].name
            weight = _initializer(graph, f"{base}__depthwise_w", scale.reshape((channels, 1) + (1,) * (rank - 2)))
            bias = _initializer(graph, f"{base}__depthwise_b", shift)
            conv = ir.node("Conv", [x, weight, bias], {"group": channels, "kernel_shape": [1] * (rank - 2)},
                           name=f"{base}__depthwise")
            out = last.outputs[0]
            conv.outputs[0].shape, conv.outputs[0].type = out.shape, out.type
            graph.insert_before(node, conv)
            out.replace_all_uses_with(conv.outputs[0], replace_graph_outputs=True)
            name = out.name
            for old in ([last, node] if last is not node else [node]):
                graph.remove(old, safe=True)
            conv.outputs[0].name = name
            modified = True
        return ir.passes.PassResult(model, modified)

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

from deploycomp.ir import add_initializer
from deploycomp.passes.rules._util import const, per_channel

__all__ = ["AffineToDepthwiseConvPass"]


def _operands(node: ir.Node) -> tuple[ir.Value, np.ndarray] | None:
    """(the activation, the constant) of a binary Mul or Add with exactly one constant."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    consts = [const(v) for v in node.inputs]
    if (consts[0] is None) == (consts[1] is None):
        return None
    x, c = (node.inputs[1], consts[0]) if consts[1] is None else (node.inputs[0], consts[1])
    return x, c


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
    values = per_channel(c, len(shape), shape[1]) if np.issubdtype(c.dtype, np.floating) else None
    if values is None:
        return None
    values = values.astype(np.float32)
    if node.op_type == "Mul":
        return x, values, np.zeros_like(values)
    return x, np.ones_like(values), values


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
            if len(users) == 1 and not node.outputs[0].is_graph_output():
                after = _affine(users[0].node)
                if after is not None and after[0] is node.outputs[0] and users[0].node.op_type == "Add":
                    shift, last = after[2], users[0].node
            if np.all(scale == scale[0]):
                continue
            channels, rank = scale.size, len(x.shape)
            base = node.name or node.outputs[0].name
            weight = add_initializer(graph, f"{base}__depthwise_w", scale.reshape((channels, 1) + (1,) * (rank - 2)))
            bias = add_initializer(graph, f"{base}__depthwise_b", shift)
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

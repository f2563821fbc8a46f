"""Reading and replacing the constants of onnx-ir nodes, for the quantization passes.

QDQ insertion, equalization, smoothing and bias correction all read a layer's constant
weights and attributes as numpy (and lay its weights out as a matrix), and give a node a
new initializer. New initializers are always
fresh values, never edits of the old tensor, because an initializer may be shared.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer  # noqa: F401 - re-exported: the quantization passes' helper
from deploycomp.passes.rules._util import const as constant  # the rewrite rules' reader, the same test

__all__ = ["add_initializer", "add_to_bias", "attributes", "bias_slot", "constant", "explicit_pad", "set_constant_input",
           "weight_matrix"]


def attributes(node: ir.Node) -> dict:
    return {k: a.value for k, a in node.attributes.items()}


def explicit_pad(graph: ir.Graph, value: ir.Value, pads, tag: str) -> ir.Node:
    """A ``Pad`` of zeros of ``value`` by a Conv's ``pads`` (its spatial begins, then ends),
    named ``{tag}_pad`` and shaped where ``value``'s shape is known; not yet inserted. What
    a Conv's own padding does, as a node, so that something can come between the two."""
    rank = len(pads) // 2
    full = np.array([0, 0, *pads[:rank], 0, 0, *pads[rank:]], np.int64)
    pad = ir.node("Pad", [value, add_initializer(graph, f"{tag}_pads", full)], name=f"{tag}_pad")
    pad.outputs[0].name, pad.outputs[0].type = f"{tag}_pad", value.type
    if value.shape is not None and len(value.shape) == rank + 2:
        dims = list(value.shape)
        pad.outputs[0].shape = ir.Shape(dims[:2] + [d + int(pads[i] + pads[rank + i]) if isinstance(d, int) else None
                                                    for i, d in enumerate(dims[2:])])
    return pad


def set_constant_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str) -> None:
    """Make input ``index`` of ``node`` a new float32 initializer (adding the input if the
    node has fewer, e.g. a Conv without a bias)."""
    value = add_initializer(graph, name, np.asarray(array, np.float32))
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)


def weight_matrix(node: ir.Node, w: np.ndarray) -> np.ndarray:
    """A compute layer's weights ``w`` as (inputs, outputs), so that ``y = x @ M``: a
    Gemm's ``B`` (transposed if ``transB``) times ``alpha``, a MatMul's as they are, a
    group-1 Conv's as (input channels x kernel taps, output channels)."""
    attrs = attributes(node)
    if node.op_type == "Gemm":
        return (w.T if attrs.get("transB", 0) else w) * float(attrs.get("alpha", 1.0))
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1).T
    return w


def bias_slot(node: ir.Node) -> tuple[ir.Node, int] | None:
    """Where a Conv/Gemm/MatMul layer's constant bias lives, or is added: input 2 of a Conv
    or Gemm (absent or constant), the constant operand of the Add that alone reads a
    MatMul. None where there is no constant bias to change (a computed one, a Gemm with
    ``beta`` 0, a MatMul without such an Add)."""
    if node.op_type in ("Conv", "Gemm"):
        if node.op_type == "Gemm" and float(attributes(node).get("beta", 1.0)) == 0.0:
            return None
        present = len(node.inputs) > 2 and node.inputs[2] is not None
        return (node, 2) if not present or constant(node.inputs[2]) is not None else None
    w = constant(node.inputs[1]) if node.op_type == "MatMul" and len(node.inputs) > 1 else None
    uses = list(node.outputs[0].uses())
    if w is None or w.ndim != 2 or len(uses) != 1 or uses[0][0].op_type != "Add":
        return None
    add, other = uses[0][0], 1 - uses[0][1]
    bias = constant(add.inputs[other])
    if bias is not None and bias.size == w.shape[1] and bias.shape[-1:] == (w.shape[1],):
        return add, other
    return None


def add_to_bias(graph: ir.Graph, node: ir.Node, delta: np.ndarray, name: str) -> bool:
    """Add ``delta`` (one value per output channel) to the layer's bias, through a Gemm's
    ``beta``, creating the bias if absent; False if it has no constant bias (see
    :func:`bias_slot`)."""
    slot = bias_slot(node)
    if slot is None:
        return False
    holder, index = slot
    beta = float(attributes(node).get("beta", 1.0)) if node.op_type == "Gemm" else 1.0
    delta = np.asarray(delta, np.float64).reshape(-1) / beta
    present = index < len(holder.inputs) and holder.inputs[index] is not None
    current = constant(holder.inputs[index]) if present else np.zeros(delta.shape)
    if current.size != delta.size:
        current = np.broadcast_to(current, delta.shape)  # a scalar Gemm C
    set_constant_input(graph, holder, index, current.astype(np.float64) + delta.reshape(current.shape), name)
    return True

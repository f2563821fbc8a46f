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

__all__ = ["add_initializer", "attributes", "constant", "set_constant_input", "weight_matrix"]


def attributes(node: ir.Node) -> dict:
    return {k: a.value for k, a in node.attributes.items()}


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

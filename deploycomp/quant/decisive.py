"""Tensors whose extremes are the model's answer: their int8 range keeps them.

A range method that clips outliers (``percentile``) is right for most activations: a
handful of extreme values would otherwise stretch the scale over every other value. It
is wrong where the extreme values *are* the signal: the logits a Softmax, an ArgMax or a
TopK reads. There the few largest values (one per position, among thousands of classes)
are the rare ones a percentile cuts. Measured on PP-OCRv5's recognizer (18,385 classes
per time step): the 99.99 % quantile put the logits' upper end at 3.7 where the winning
classes reach 21.9, every time step's top classes were clipped to one level, and the
all-int8 model's output error in TFLite's encoding was 0.36 (0.12 with the extremes
kept; the logits alone quantized between their extremes: cosine 0.99997).

So whatever the range method, such a tensor's range is its observed minimum and maximum.
The walk goes up from each deciding op's data input through ops that keep the order (or
only reverse it) element by element or only move elements (a bias ``Add``, a ``Mul`` by a
constant, reshapes, transposes, slices, concatenation), marking each tensor on the way:
any of them may be quantized (TFLite quantizes the MatMul's output and the bias Add's).
"""

from __future__ import annotations

import onnx_ir as ir

from deploycomp.analysis import MOVES, SELECTIONS
from deploycomp.quant.constants import constant

__all__ = ["DECIDING_OPS", "decisive_tensors"]

DECIDING_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "TopK", "ReduceMax", "ReduceMin"})
"""Ops whose result is decided by their input's extreme values (its first input)."""

_ORDER_KEEPING = MOVES | SELECTIONS | {"Cast"}
"""Ops that only move, select or retype elements (a Concat's every data input is walked)."""

_AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
"""Element-wise with a constant operand: each element moved by the same monotone map."""


def _data_inputs(node: ir.Node) -> list[ir.Value]:
    """The inputs the walk continues through (none where ``node`` does not keep the order)."""
    if node.op_type in _ORDER_KEEPING:
        inputs = list(node.inputs) if node.op_type == "Concat" else list(node.inputs[:1])
        return [v for v in inputs if v is not None and constant(v) is None]
    if node.op_type in _AFFINE and len(node.inputs) == 2:
        variable = [v for v in node.inputs if v is not None and constant(v) is None]
        return variable if len(variable) == 1 else []
    return []


def decisive_tensors(model: ir.Model) -> set[str]:
    """Names of the tensors (in the main graph) whose range must keep its extremes."""
    marked: set[str] = set()
    stack = [node.inputs[0] for node in model.graph if node.op_type in DECIDING_OPS and node.inputs
             and node.inputs[0] is not None]
    while stack:
        value = stack.pop()
        if value.name in marked or constant(value) is not None:
            continue
        marked.add(value.name)
        producer = value.producer()
        if producer is not None:
            stack.extend(_data_inputs(producer))
    return marked

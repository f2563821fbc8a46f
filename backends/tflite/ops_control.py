"""ONNX control flow -> TFLite: ``If`` lowered inline.

TFLite has an IF op with subgraphs, but XNNPACK takes none of it and every branch would
be a subgraph of its own. ONNX branches have no side effects, so an ``If`` whose
condition is a constant is its taken branch, and any other is both branches computed
and a SELECT_V2 by the condition: exact, at the cost of running the branch not taken
(typically small: a verifier head, a sample-rate switch). ``Loop`` and ``Scan`` stay
unsupported (named by the lowering's op check).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.backends.tflite.layout import identity
from deploycomp.backends.tflite.lowering import Lowering, lowers
from deploycomp.errors import UnsupportedError


@lowers("If")
def lower_if(lo: Lowering, node: ir.Node) -> None:
    cond = node.inputs[0]
    branches = [node.attributes[a].as_graph() for a in ("then_branch", "else_branch")]
    taken = lo.const(cond)
    if taken is not None:
        branch = branches[0 if bool(np.asarray(taken).reshape(-1)[0]) else 1]
        lo.lower_nodes(branch)
        for out, value in zip(node.outputs, branch.outputs):
            data = lo.const(value)
            if data is not None:
                lo.folded[out.name] = data
            else:
                lo.alias(out, lo.input(value), lo.perm(value))
        return
    for branch in branches:
        lo.lower_nodes(branch)
    condition = lo.input(cond, identity(len(lo.shape(cond))))
    if lo.w.shape(condition):  # a one-element [1] condition: a scalar, which broadcasts to any rank
        scalar = lo.temp(f"{cond.name}/scalar", (), np.bool_)
        lo.emit("RESHAPE", [condition, lo.int32([])], [scalar], lo.w.options("Reshape", newShape=[]))
        condition = scalar
    for out, then, other in zip(node.outputs, *(b.outputs for b in branches)):
        shape = lo.shape(out)
        if lo.shape(then) != shape or lo.shape(other) != shape:
            raise UnsupportedError(f"tflite: If whose branches give different shapes for '{out.name}'")
        rank = len(shape)
        lo.emit("SELECT_V2", [condition, lo.broadcast_input(then, rank, identity(rank)),
                              lo.broadcast_input(other, rank, identity(rank))], [lo.output(out, identity(rank))])

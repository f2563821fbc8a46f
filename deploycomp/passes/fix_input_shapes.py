"""Pin dynamic input dims to the shapes the user asked for (``--input NAME:SHAPE``).

Why a pass and not an argument to the backend: once inputs are static, shape
inference makes every ``Shape`` a constant, and constant folding then removes whole
shape subgraphs (YOLOv8's anchor grid, PP-OCR's reshapes) before any backend sees
them. Intermediate shapes inferred for the old symbolic inputs are dropped so that
re-inference cannot merge stale symbols into the new static ones.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["FixInputShapesPass"]


class FixInputShapesPass(ir.passes.InPlacePass):
    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.shapes = dict(shapes)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for value in model.graph.inputs:
            want = self.shapes.get(value.name)
            if want is None or (value.shape is not None and tuple(value.shape) == want):
                continue
            value.shape = ir.Shape(want)
            modified = True
        if modified:
            for node in ir.traversal.RecursiveGraphIterator(model.graph):
                for out in node.outputs:
                    out.shape = None
        return ir.passes.PassResult(model, modified)

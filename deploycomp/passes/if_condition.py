"""An ``If``'s condition as a scalar.

ONNX takes any single-element boolean tensor as ``If``'s condition, and exporters pass
what they have: a wake-word model's ``GreaterOrEqual`` of a (1, 1) score. OpenVINO's
``If`` accepts rank 0 or 1 only, and refused that model on the host target. A
``Reshape`` to shape ``[]`` of a one-element tensor is exact, so every condition that is
not already a scalar (or whose rank is unknown) is read through one.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["ScalarIfConditionPass"]


class ScalarIfConditionPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type != "If" or node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
                continue
            cond = node.inputs[0]
            if cond.shape is not None and len(cond.shape) == 0:
                continue
            base = f"{node.name or cond.name}__cond"
            shape = ir.node("Constant", [], attributes={"value": ir.tensor(np.zeros(0, np.int64), name=f"{base}_shape")},
                            name=f"{base}_shape")
            shape.outputs[0].name = f"{base}_shape"
            reshape = ir.node("Reshape", [cond, shape.outputs[0]], name=f"{base}_scalar")
            reshape.outputs[0].name = f"{base}_scalar"
            reshape.outputs[0].shape, reshape.outputs[0].type = ir.Shape([]), cond.type
            node.graph.insert_before(node, [shape, reshape])
            node.replace_input_with(0, reshape.outputs[0])
            modified = True
        return ir.passes.PassResult(model, modified)

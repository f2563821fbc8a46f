"""FixInputShapesPass: pins dims and lets inference make every shape static."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from deploycomp.ir import load_model
from deploycomp.passes.fix_input_shapes import FixInputShapesPass


def test_pins_input_and_reinfers_static_shapes(tiny_conv):
    model = load_model(tiny_conv).model
    result = FixInputShapesPass({"x": (2, 3, 16, 16)})(model)
    assert result.modified
    ShapeInferencePass()(result.model)
    assert list(model.graph.inputs[0].shape) == [2, 3, 16, 16]
    assert list(model.graph.outputs[0].shape) == [2, 4]
    assert all(n.outputs[0].shape.is_static() for n in ir.traversal.RecursiveGraphIterator(model.graph))


def test_same_shape_is_not_a_modification(tiny_conv):
    model = load_model(tiny_conv).model
    FixInputShapesPass({"x": (1, 3, 16, 16)})(model)
    assert not FixInputShapesPass({"x": (1, 3, 16, 16)})(model).modified

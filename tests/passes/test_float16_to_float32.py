"""A float16 model widened to float32 for int8: outputs as before (to float16 rounding),
no float16 left inside, the interface still float16."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from deploycomp.passes.float16_to_float32 import Float16ToFloat32Pass, has_float16
from tests.passes._harness import model_from_text

def _half_model() -> onnx.ModelProto:
    """float16 inputs and outputs, a float16 Constant, ConstantOfShape and initializer, a
    Cast to float16, an If whose branches give float16, an output that is an input."""
    from onnx import TensorProto as T, helper, numpy_helper

    f16 = lambda v: helper.make_tensor("v", T.FLOAT16, [1], np.array([v], np.float16).view(np.uint16).tolist())
    branch = lambda name, node: helper.make_graph([node], name, [], [helper.make_tensor_value_info(
        node.output[0], T.FLOAT16, [2, 4])])
    nodes = [helper.make_node("Constant", [], ["k"], value=f16(0.5)),
             helper.make_node("Mul", ["x", "k"], ["a"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["ones"], value=f16(1.0)),
             helper.make_node("Add", ["a", "ones"], ["b"]),
             helper.make_node("Cast", ["b"], ["f"], to=T.FLOAT),
             helper.make_node("Cast", ["f"], ["h"], to=T.FLOAT16),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("t", helper.make_node("Tanh", ["h"], ["p"])),
                              else_branch=branch("e", helper.make_node("Mul", ["h", "w"], ["q"]))),
             helper.make_node("Identity", ["x"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT16, [2, 4]), helper.make_tensor_value_info("c", T.BOOL, [])],
        [helper.make_tensor_value_info(n, t, [2, 4]) for n, t in (("y", T.FLOAT16), ("z", T.FLOAT16), ("f", T.FLOAT))],
        [numpy_helper.from_array(np.full((2, 4), 1.5, np.float16), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_a_float16_model_computes_in_float32_behind_float16_inputs_and_outputs():
    source = _half_model()
    model = ir.from_proto(source)
    assert has_float16(model)
    assert Float16ToFloat32Pass()(model).modified
    widened = ir.to_proto(model)
    onnx.checker.check_model(widened, full_check=True)
    inside = [v for n in ir.traversal.RecursiveGraphIterator(model.graph) for v in n.outputs
              if v.dtype == ir.DataType.FLOAT16]
    assert [v.name for v in inside] == ["y", "z"]  # only the two Casts back at the outputs
    assert [v.dtype for v in model.graph.inputs] == [ir.DataType.FLOAT16, ir.DataType.BOOL]
    assert [v.dtype for v in model.graph.outputs] == [ir.DataType.FLOAT16, ir.DataType.FLOAT16, ir.DataType.FLOAT]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float16)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        for want, got in zip(_run(source, feeds), _run(widened, feeds)):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_a_float32_model_is_left_alone():
    model = ir.from_proto(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) { y = Relu(x) }
    """))
    assert not has_float16(model) and not Float16ToFloat32Pass()(model).modified

"""Computed weights fold whatever their size; the rest of the graph is left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare

BIG_FILL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 64, 16, 16] x, int64[4] wshape, int64[4] eshape) => (float[1, 64, 16, 16] y, float[1, 64, 16, 16] z) {
    w = ConstantOfShape <value = float[1] {0.01}> (wshape)
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    y = Relu(c)
    e = ConstantOfShape <value = float[1] {2.0}> (eshape)
    z = Mul(x, e)
}
"""


def test_a_fill_feeding_a_conv_weight_folds_even_when_large(tmp_path):
    """A 128x128x3x3 weight (147456 elements) is past the general folder's cap; it folds
    here because it is a weight. The same-sized fill read by Mul (an activation-sized
    broadcast) is the general folder's business and stays capped there."""
    text = BIG_FILL.replace("64, 16, 16", "128, 32, 32")
    model = model_from_text(text, wshape=np.array([128, 128, 3, 3], np.int64),
                            eshape=np.array([1, 128, 32, 32], np.int64))
    x = np.random.default_rng(0).random((1, 128, 32, 32), dtype=np.float32)
    ops = optimize_and_compare(tmp_path, model, {"x": x})
    assert ops["Conv"] == 1 and ops["ConstantOfShape"] == 1  # the weight's fill is gone; z's stays


def test_a_deep_network_behind_a_matmul_does_not_exhaust_the_stack():
    """A MatMul's input 0 is a weight slot; where it is an activation the walk goes up the
    whole network. PP-OCRv5 rec (550 nodes) passed Python's recursion limit there: the walk
    is iterative, and a weight computed through a long constant chain still folds."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from deploycomp.passes.weight_folding import WeightFoldingPass

    depth = 3000
    nodes = [helper.make_node("Relu", [f"a{i}"], [f"a{i + 1}"], name=f"relu{i}") for i in range(depth)]
    nodes += [helper.make_node("Add", [f"w{i}", "one"], [f"w{i + 1}"], name=f"add{i}") for i in range(depth)]
    nodes.append(helper.make_node("MatMul", [f"a{depth}", f"w{depth}"], ["y"], name="mm"))
    inits = [numpy_helper.from_array(np.zeros((4, 4), np.float32), "w0"), numpy_helper.from_array(np.ones((), np.float32), "one")]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("a0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert WeightFoldingPass()(model).modified
    ops = Counter(n.op_type for n in model.graph)
    assert ops == {"Relu": depth, "MatMul": 1}  # the Add chain folded to one weight
    weight = model.graph.node("mm").inputs[1].const_value.numpy()
    assert np.array_equal(weight, np.full((4, 4), depth, np.float32))

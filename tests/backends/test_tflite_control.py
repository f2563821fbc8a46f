"""``If`` lowered inline: a data-dependent condition computes both branches and selects
(a wake-word model's verifier head runs only above a score), a constant one takes its
branch; ``Loop`` stays refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.backends.test_tflite_outputs import PRECISIONS, check, w


def _verifier_model(threshold: float) -> onnx.ModelProto:
    """p = sigmoid(x @ a); if p >= threshold: sigmoid(relu(x @ b) @ c) else p."""
    rng = np.random.default_rng(3)
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), n) for n, v in
             (("a", rng.standard_normal((8, 1))), ("b", rng.standard_normal((8, 16))),
              ("c", rng.standard_normal((16, 1))), ("t", np.array([threshold])))]
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "b"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "c"], ["l"]), helper.make_node("Sigmoid", ["l"], ["p2"])],
        "then", [], [helper.make_tensor_value_info("p2", onnx.TensorProto.FLOAT, [1, 1])])
    else_branch = helper.make_graph([helper.make_node("Identity", ["p"], ["p1"])], "else", [],
                                    [helper.make_tensor_value_info("p1", onnx.TensorProto.FLOAT, [1, 1])])
    nodes = [helper.make_node("MatMul", ["x", "a"], ["s"]), helper.make_node("Sigmoid", ["s"], ["p"]),
             helper.make_node("ReduceMax", ["p"], ["m"], keepdims=0),
             helper.make_node("GreaterOrEqual", ["m", "t"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="verify")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("taken", ["then", "else"])
def test_if_with_a_data_dependent_condition(tmp_path, precision, taken):
    model = _verifier_model(0.5)
    x = w(1, 8, seed=11)
    score = 1 / (1 + np.exp(-(x @ onnx.numpy_helper.to_array(model.graph.initializer[0]))))
    if (score.max() >= 0.5) != (taken == "then"):
        x = -x
    info = check(tmp_path, model, {"x": (1, 8)}, precision, passes=False, feeds={"x": x})
    assert info["ops"]["SELECT_V2"] == 1


@pytest.mark.parametrize("precision", PRECISIONS)
def test_if_with_a_constant_condition_is_its_branch(tmp_path, precision):
    model = _verifier_model(0.5)
    cond = next(n for n in model.graph.node if n.op_type == "GreaterOrEqual")
    model.graph.node.remove(cond)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(True), "cond"))
    info = check(tmp_path, model, {"x": (1, 8)}, precision, passes=False)
    assert "SELECT_V2" not in info["ops"]


def test_loop_is_refused_by_name():
    import onnx_ir as ir

    from deploycomp.backends.tflite.lowering import Lowering
    from deploycomp.errors import UnsupportedError

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Add", ["v", "v"], ["v2"])], "body",
        [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c2", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("v2", onnx.TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "x"], ["y"], body=body, name="decoder")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("n", onnx.TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(UnsupportedError, match=r"no lowering for op\(s\) Loop \(first: node 'decoder'\)"):
        Lowering(model).run()

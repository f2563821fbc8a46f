"""ONNX Runtime's fused ``com.microsoft`` ops as core ops: outputs as ONNX Runtime gives
them for the fused op, and no ``com.microsoft`` node left."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from tests.passes._harness import optimize_and_compare

H = 16
R = np.random.default_rng(0)


def _model(nodes, inputs, outputs, weights, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft", **attrs)


W = {"b": R.standard_normal(H), "gamma": R.standard_normal(H), "beta": R.standard_normal(H),
     "w": R.standard_normal((H, H)) * 0.3}
CASES = {
    "Gelu": ([ms("Gelu", ["x"], ["y"])], ["y"]),
    "BiasGelu": ([ms("BiasGelu", ["x", "b"], ["y"])], ["y"]),
    "FastGelu with bias": ([ms("FastGelu", ["x", "b"], ["y"])], ["y"]),
    "FastGelu": ([ms("FastGelu", ["x"], ["y"])], ["y"]),
    "QuickGelu": ([ms("QuickGelu", ["x"], ["y"], alpha=1.5)], ["y"]),
    "SkipLayerNormalization, beta, bias, the sum out": (
        [ms("SkipLayerNormalization", ["x", "s", "gamma", "beta", "b"], ["y", "", "", "sum"], epsilon=1e-5)],
        ["y", "sum"]),
    "SkipLayerNormalization without beta": (
        [ms("SkipLayerNormalization", ["x", "s", "gamma"], ["y"], epsilon=1e-5)], ["y"]),
    "SkipSimplifiedLayerNormalization": (
        [ms("SkipSimplifiedLayerNormalization", ["x", "s", "gamma"], ["y"], epsilon=1e-6)], ["y"]),
    "FusedMatMul transposed, alpha": ([ms("FusedMatMul", ["x", "s"], ["y"], transB=1, alpha=0.5)], ["y"]),
}


@pytest.mark.parametrize("opset", [17, 18], ids=["opset 17", "opset 18"])  # ReduceMean's axes: attribute, input
@pytest.mark.parametrize("case", CASES)
def test_a_fused_contrib_op_becomes_core_ops(tmp_path, case, opset):
    nodes, outputs = CASES[case]
    shape = [H, H] if case.startswith("FusedMatMul") else [2, 8, H]
    model = _model(nodes, [("x", shape), ("s", shape)], [(o, shape) for o in outputs], W, opset)
    feeds = {"x": R.standard_normal(shape).astype(np.float32), "s": R.standard_normal(shape).astype(np.float32)}
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5)
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_a_skip_layer_norm_whose_training_outputs_are_read_stays(tmp_path):
    model = _model([ms("SkipLayerNormalization", ["x", "s", "gamma"], ["y", "mean"], epsilon=1e-5)],
                   [("x", [2, 8, H]), ("s", [2, 8, H])], [("y", [2, 8, H]), ("mean", [2, 8, 1])], W)
    feeds = {"x": R.standard_normal((2, 8, H)).astype(np.float32), "s": R.standard_normal((2, 8, H)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds)
    assert ops["SkipLayerNormalization"] == 1

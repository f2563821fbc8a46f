"""ONNX Runtime's fused ``com.microsoft`` ops as core ops in the TFLite and TensorRT
pipelines: outputs as ONNX Runtime gives them for the fused op, and no ``com.microsoft``
node left; OpenVINO's pipeline keeps them (it runs them itself)."""

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
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_a_skip_layer_norm_whose_training_outputs_are_read_stays(tmp_path):
    model = _model([ms("SkipLayerNormalization", ["x", "s", "gamma"], ["y", "mean"], epsilon=1e-5)],
                   [("x", [2, 8, H]), ("s", [2, 8, H])], [("y", [2, 8, H]), ("mean", [2, 8, 1])], W)
    feeds = {"x": R.standard_normal((2, 8, H)).astype(np.float32), "s": R.standard_normal((2, 8, H)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="tflite")
    assert ops["SkipLayerNormalization"] == 1


SEQ, HEADS = 6, 4


def _attention_model(mask: str, **attrs) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(1)
    weights = {"w": rng.standard_normal((H, 3 * H)) * 0.3, "bias": rng.standard_normal(3 * H) * 0.1}
    ins = ["x", "w", "bias"] + (["mask"] if mask != "none" else [])
    node = ms("Attention", ins, ["y"], num_heads=HEADS, **attrs)
    inputs = [helper.make_tensor_value_info("x", T.FLOAT, [2, SEQ, H])]
    feeds = {"x": rng.standard_normal((2, SEQ, H)).astype(np.float32)}
    if mask == "2-D":
        inputs.append(helper.make_tensor_value_info("mask", T.INT32, [2, SEQ]))
        feeds["mask"] = np.array([[1] * SEQ, [1] * (SEQ - 2) + [0, 0]], np.int32)
    elif mask == "lengths":
        inputs.append(helper.make_tensor_value_info("mask", T.INT32, [2]))
        feeds["mask"] = np.array([SEQ, SEQ - 3], np.int32)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", T.FLOAT, [2, SEQ, H])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]), feeds


@pytest.mark.parametrize("mask, attrs", [("none", {}), ("2-D", {}), ("lengths", {}), ("none", {"unidirectional": 1}),
                                         ("2-D", {"scale": 0.2, "mask_filter_value": -1e4})],
                         ids=["no mask", "0/1 mask", "sequence lengths", "causal", "scale"])
def test_a_fused_attention_becomes_core_ops(tmp_path, mask, attrs):
    """ONNX Runtime's ``Attention`` (what its optimizer fuses a BERT layer's self-attention
    into): the QKV projection, per-head scaled softmax with the mask, and the heads joined."""
    model, feeds = _attention_model(mask, **attrs)
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_a_fused_embedding_layer_norm_becomes_core_ops(tmp_path):
    """``EmbedLayerNormalization``: word, position and segment embeddings summed and
    normalized; its ``mask_index`` (attended tokens per sequence) feeding an ``Attention``."""
    rng = np.random.default_rng(2)
    vocab, positions = 30, 16
    weights = {"words": rng.standard_normal((vocab, H)), "pos": rng.standard_normal((positions, H)),
               "segs": rng.standard_normal((2, H)), "gamma": rng.standard_normal(H), "beta": rng.standard_normal(H),
               "w": rng.standard_normal((H, 3 * H)) * 0.3, "bias": rng.standard_normal(3 * H) * 0.1}
    nodes = [ms("EmbedLayerNormalization", ["ids", "segments", "words", "pos", "segs", "gamma", "beta", "mask"],
                ["e", "index"], epsilon=1e-12),
             ms("Attention", ["e", "w", "bias", "index"], ["y"], num_heads=HEADS)]
    inputs = [helper.make_tensor_value_info(n, T.INT32, [2, SEQ]) for n in ("ids", "segments", "mask")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", T.FLOAT, [2, SEQ, H])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feeds = {"ids": rng.integers(0, vocab, (2, SEQ)).astype(np.int32),
             "segments": np.array([[0] * 3 + [1] * 3, [0] * SEQ], np.int32),
             "mask": np.array([[1] * SEQ, [1] * 4 + [0] * 2], np.int32)}
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_openvino_keeps_the_fused_ops_tensorrt_writes_them_out(tmp_path):
    model, feeds = _attention_model("2-D")
    (tmp_path / "ov").mkdir(), (tmp_path / "trt").mkdir()
    assert optimize_and_compare(tmp_path / "ov", model, feeds, pipeline="openvino")["Attention"] == 1
    assert "Attention" not in optimize_and_compare(tmp_path / "trt", model, feeds, rtol=1e-4, atol=1e-5,
                                                   pipeline="tensorrt")
